//! Optimizers (SGD with momentum/Nesterov, Adam, RMSProp; L2 weight decay) and learning-rate
//! schedules (constant, step, cosine).
//!
//! Each takes the *averaged* gradient (the trainer divides the summed, possibly clipped and
//! noised, gradient by the batch size or by the expected batch size under DP). Update rules follow
//! PyTorch's `torch.optim` so hyperparameters carry over. Weight decay adds `wd * theta` to the
//! gradient (coupled L2, as PyTorch's SGD/Adam/RMSprop do); under DP it is data-independent, so
//! it is post-processing and costs no privacy.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OptimizerConfig {
    Sgd {
        lr: f32,
        #[serde(default)]
        momentum: f32,
        #[serde(default)]
        nesterov: bool,
        #[serde(default)]
        weight_decay: f32,
    },
    Adam {
        lr: f32,
        #[serde(default = "beta1")]
        beta1: f32,
        #[serde(default = "beta2")]
        beta2: f32,
        #[serde(default = "eps")]
        eps: f32,
        #[serde(default)]
        weight_decay: f32,
    },
    RmsProp {
        lr: f32,
        #[serde(default = "alpha")]
        alpha: f32,
        #[serde(default = "eps")]
        eps: f32,
        #[serde(default)]
        momentum: f32,
        #[serde(default)]
        weight_decay: f32,
    },
}

fn beta1() -> f32 {
    0.9
}
fn beta2() -> f32 {
    0.999
}
fn eps() -> f32 {
    1e-8
}
fn alpha() -> f32 {
    0.99
}

impl OptimizerConfig {
    pub fn lr(&self) -> f32 {
        match self {
            OptimizerConfig::Sgd { lr, .. }
            | OptimizerConfig::Adam { lr, .. }
            | OptimizerConfig::RmsProp { lr, .. } => *lr,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EngineError::Config(m));
        let lr = self.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return bad(format!(
                "learning rate must be positive and finite, got {lr}"
            ));
        }
        match self {
            OptimizerConfig::Sgd {
                momentum,
                weight_decay,
                nesterov,
                ..
            } => {
                if !(0.0..1.0).contains(momentum) || *weight_decay < 0.0 {
                    return bad("sgd: momentum must be in [0, 1) and weight decay >= 0".into());
                }
                if *nesterov && *momentum == 0.0 {
                    return bad("sgd: Nesterov needs a momentum > 0".into());
                }
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                ..
            } => {
                if !(0.0..1.0).contains(beta1)
                    || !(0.0..1.0).contains(beta2)
                    || *eps <= 0.0
                    || *weight_decay < 0.0
                {
                    return bad("adam: betas must be in [0, 1), eps > 0, weight decay >= 0".into());
                }
            }
            OptimizerConfig::RmsProp {
                alpha,
                eps,
                momentum,
                weight_decay,
                ..
            } => {
                if !(0.0..1.0).contains(alpha)
                    || *eps <= 0.0
                    || !(0.0..1.0).contains(momentum)
                    || *weight_decay < 0.0
                {
                    return bad(
                        "rmsprop: alpha and momentum must be in [0, 1), eps > 0, weight decay >= 0"
                            .into(),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Learning-rate schedule, as a multiplier of the base rate at step t (0-based).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Schedule {
    #[default]
    Constant,
    /// Multiply by `gamma` every `every` steps.
    Step { every: u64, gamma: f32 },
    /// Cosine decay from 1 to `min_factor` over `total` steps, then flat.
    Cosine {
        total: u64,
        #[serde(default)]
        min_factor: f32,
    },
}

impl Schedule {
    /// Refuse a schedule that would make the rate negative, zero or undefined: a negative
    /// `gamma` flips the sign of every other step's rate (gradient ascent), 0 stops learning
    /// after the first period, and `every = 0` has no period at all.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Schedule::Constant => Ok(()),
            Schedule::Step { every, gamma } => {
                if every == 0 {
                    return Err(EngineError::InvalidField {
                        field: "every",
                        value: every.to_string(),
                        reason: "the step period must be at least 1",
                    });
                }
                if !(gamma > 0.0 && gamma.is_finite()) {
                    return Err(EngineError::InvalidField {
                        field: "gamma",
                        value: gamma.to_string(),
                        reason: "the decay factor must be > 0 and finite",
                    });
                }
                Ok(())
            }
            Schedule::Cosine { min_factor, .. } => {
                if !(0.0..=1.0).contains(&min_factor) {
                    return Err(EngineError::InvalidField {
                        field: "min_factor",
                        value: min_factor.to_string(),
                        reason: "the final fraction of the rate must be in [0, 1]",
                    });
                }
                Ok(())
            }
        }
    }

    pub fn factor(&self, step: u64) -> f32 {
        match self {
            Schedule::Constant => 1.0,
            Schedule::Step { every, gamma } => gamma.powi((step / (*every).max(1)) as i32),
            Schedule::Cosine { total, min_factor } => {
                let t = (step.min(*total) as f64) / (*total).max(1) as f64;
                let c = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
                (*min_factor as f64 + (1.0 - *min_factor as f64) * c) as f32
            }
        }
    }
}

/// Optimizer state: step counter and moment buffers (saved in checkpoints, never the DP noise RNG).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct OptimizerState {
    pub step: u64,
    /// Named buffers, each the length of the parameter vector (e.g. "momentum", "exp_avg").
    pub buffers: Vec<(String, Vec<f32>)>,
}

pub struct Optimizer {
    pub config: OptimizerConfig,
    pub schedule: Schedule,
    pub state: OptimizerState,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig, schedule: Schedule, num_params: usize) -> Result<Self> {
        config.validate()?;
        schedule.validate()?;
        let names: &[&str] = match &config {
            OptimizerConfig::Sgd { momentum, .. } if *momentum > 0.0 => &["momentum"],
            OptimizerConfig::Sgd { .. } => &[],
            OptimizerConfig::Adam { .. } => &["exp_avg", "exp_avg_sq"],
            OptimizerConfig::RmsProp { momentum, .. } if *momentum > 0.0 => {
                &["square_avg", "momentum"]
            }
            OptimizerConfig::RmsProp { .. } => &["square_avg"],
        };
        let buffers = names
            .iter()
            .map(|n| (n.to_string(), vec![0.0; num_params]))
            .collect();
        Ok(Self {
            config,
            schedule,
            state: OptimizerState { step: 0, buffers },
        })
    }

    /// Replace the state (from a checkpoint), checking buffer names and lengths.
    pub fn load_state(&mut self, state: OptimizerState) -> Result<()> {
        let want: Vec<(&str, usize)> = self
            .state
            .buffers
            .iter()
            .map(|(n, b)| (n.as_str(), b.len()))
            .collect();
        let got: Vec<(&str, usize)> = state
            .buffers
            .iter()
            .map(|(n, b)| (n.as_str(), b.len()))
            .collect();
        if want != got {
            return Err(EngineError::Config(format!(
                "optimizer state has buffers {got:?}, this optimizer needs {want:?}"
            )));
        }
        self.state = state;
        Ok(())
    }

    /// The learning rate used at the current step.
    pub fn current_lr(&self) -> f32 {
        self.config.lr() * self.schedule.factor(self.state.step)
    }

    /// One update with the averaged gradient `grad`.
    pub fn step(&mut self, params: &mut [f32], grad: &[f32]) {
        assert_eq!(params.len(), grad.len());
        let lr = self.current_lr();
        self.state.step += 1;
        let t = self.state.step;
        let bufs = &mut self.state.buffers;
        match self.config {
            OptimizerConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
                ..
            } => {
                if momentum == 0.0 {
                    for (p, &g) in params.iter_mut().zip(grad) {
                        *p -= lr * (g + weight_decay * *p);
                    }
                } else {
                    let buf = &mut bufs[0].1;
                    for ((p, &g), b) in params.iter_mut().zip(grad).zip(buf.iter_mut()) {
                        let g = g + weight_decay * *p;
                        // PyTorch: the first step initialises the buffer with the gradient.
                        *b = if t == 1 { g } else { momentum * *b + g };
                        let d = if nesterov { g + momentum * *b } else { *b };
                        *p -= lr * d;
                    }
                }
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                ..
            } => {
                let (m_buf, rest) = bufs.split_at_mut(1);
                let (m, v) = (&mut m_buf[0].1, &mut rest[0].1);
                let bc1 = 1.0 - beta1.powi(t as i32);
                let bc2 = 1.0 - beta2.powi(t as i32);
                let step_size = lr / bc1;
                let bc2_sqrt = bc2.sqrt();
                for (((p, &g), m), v) in params
                    .iter_mut()
                    .zip(grad)
                    .zip(m.iter_mut())
                    .zip(v.iter_mut())
                {
                    let g = g + weight_decay * *p;
                    *m = beta1 * *m + (1.0 - beta1) * g;
                    *v = beta2 * *v + (1.0 - beta2) * g * g;
                    *p -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
                }
            }
            OptimizerConfig::RmsProp {
                alpha,
                eps,
                momentum,
                weight_decay,
                ..
            } => {
                let (sq_buf, rest) = bufs.split_at_mut(1);
                let sq = &mut sq_buf[0].1;
                if momentum > 0.0 {
                    let mb = &mut rest[0].1;
                    for (((p, &g), s), b) in params
                        .iter_mut()
                        .zip(grad)
                        .zip(sq.iter_mut())
                        .zip(mb.iter_mut())
                    {
                        let g = g + weight_decay * *p;
                        *s = alpha * *s + (1.0 - alpha) * g * g;
                        *b = momentum * *b + g / (s.sqrt() + eps);
                        *p -= lr * *b;
                    }
                } else {
                    for ((p, &g), s) in params.iter_mut().zip(grad).zip(sq.iter_mut()) {
                        let g = g + weight_decay * *p;
                        *s = alpha * *s + (1.0 - alpha) * g * g;
                        *p -= lr * g / (s.sqrt() + eps);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_with_a_negative_or_zero_rate_are_refused_naming_the_field() {
        let field = |s: Schedule| match s.validate() {
            Err(EngineError::InvalidField { field, .. }) => field,
            other => panic!("{s:?}: {other:?}"),
        };
        assert_eq!(
            field(Schedule::Step {
                every: 10,
                gamma: -0.1
            }),
            "gamma"
        );
        assert_eq!(
            field(Schedule::Step {
                every: 10,
                gamma: 0.0
            }),
            "gamma"
        );
        assert_eq!(
            field(Schedule::Step {
                every: 10,
                gamma: f32::NAN
            }),
            "gamma"
        );
        assert_eq!(
            field(Schedule::Step {
                every: 0,
                gamma: 0.1
            }),
            "every"
        );
        assert_eq!(
            field(Schedule::Cosine {
                total: 10,
                min_factor: -1.0
            }),
            "min_factor"
        );
        assert!(
            Schedule::Step {
                every: 1,
                gamma: 0.5
            }
            .validate()
            .is_ok()
        );
        assert!(
            Optimizer::new(
                OptimizerConfig::Sgd {
                    lr: 0.1,
                    momentum: 0.0,
                    nesterov: false,
                    weight_decay: 0.0
                },
                Schedule::Step {
                    every: 5,
                    gamma: -1.0
                },
                3
            )
            .is_err()
        );
    }

    /// Minimise f(x) = 0.5 * sum(a_i x_i^2) from x = 1: every optimizer must get close to 0.
    fn converge(cfg: OptimizerConfig, steps: usize) -> f32 {
        let a = [1.0f32, 3.0, 0.5];
        let mut x = vec![1.0f32; 3];
        let mut opt = Optimizer::new(cfg, Schedule::Constant, 3).unwrap();
        for _ in 0..steps {
            let g: Vec<f32> = x.iter().zip(&a).map(|(x, a)| a * x).collect();
            opt.step(&mut x, &g);
        }
        x.iter().map(|v| v.abs()).fold(0.0, f32::max)
    }

    #[test]
    fn all_optimizers_minimise_a_quadratic() {
        assert!(
            converge(
                OptimizerConfig::Sgd {
                    lr: 0.3,
                    momentum: 0.0,
                    nesterov: false,
                    weight_decay: 0.0
                },
                200
            ) < 1e-4
        );
        assert!(
            converge(
                OptimizerConfig::Sgd {
                    lr: 0.1,
                    momentum: 0.9,
                    nesterov: false,
                    weight_decay: 0.0
                },
                300
            ) < 1e-3
        );
        assert!(
            converge(
                OptimizerConfig::Sgd {
                    lr: 0.1,
                    momentum: 0.9,
                    nesterov: true,
                    weight_decay: 0.0
                },
                300
            ) < 1e-3
        );
        assert!(
            converge(
                OptimizerConfig::Adam {
                    lr: 0.05,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: 0.0
                },
                1000
            ) < 1e-2
        );
        assert!(
            converge(
                OptimizerConfig::RmsProp {
                    lr: 0.01,
                    alpha: 0.99,
                    eps: 1e-8,
                    momentum: 0.0,
                    weight_decay: 0.0
                },
                1000
            ) < 2e-2
        );
    }

    #[test]
    fn adam_first_step_matches_pytorch() {
        // torch.optim.Adam(lr=0.1) on grad g: the first step moves each coordinate by ~lr*sign(g).
        let mut x = vec![1.0f32, -2.0];
        let mut opt = Optimizer::new(
            OptimizerConfig::Adam {
                lr: 0.1,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            Schedule::Constant,
            2,
        )
        .unwrap();
        opt.step(&mut x, &[0.5, -3.0]);
        assert!(
            (x[0] - 0.9).abs() < 1e-6 && (x[1] + 1.9).abs() < 1e-6,
            "{x:?}"
        );
    }

    #[test]
    fn schedules() {
        let s = Schedule::Step {
            every: 10,
            gamma: 0.5,
        };
        assert_eq!(s.factor(0), 1.0);
        assert_eq!(s.factor(10), 0.5);
        assert_eq!(s.factor(25), 0.25);
        let c = Schedule::Cosine {
            total: 100,
            min_factor: 0.1,
        };
        assert!(
            (c.factor(0) - 1.0).abs() < 1e-6
                && (c.factor(100) - 0.1).abs() < 1e-6
                && (c.factor(50) - 0.55).abs() < 1e-6
        );
        assert!((c.factor(500) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn invalid_configs_are_errors() {
        assert!(
            OptimizerConfig::Sgd {
                lr: -1.0,
                momentum: 0.0,
                nesterov: false,
                weight_decay: 0.0
            }
            .validate()
            .is_err()
        );
        assert!(
            OptimizerConfig::Sgd {
                lr: 0.1,
                momentum: 0.0,
                nesterov: true,
                weight_decay: 0.0
            }
            .validate()
            .is_err()
        );
        assert!(
            OptimizerConfig::Adam {
                lr: 0.1,
                beta1: 1.0,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0
            }
            .validate()
            .is_err()
        );
    }
}
