//! Tensors as flat `Vec<f32>` plus a shape, and strided matrix views over slices.
//!
//! Layout conventions every layer follows:
//! - 2-D `[B, F]`: one row per example.
//! - 3-D `[T, B, F]`: sequences, time-major (row `t * B + b` belongs to example `b`), so one time
//!   step of the whole batch is a contiguous `[B, F]` block for the recurrent GEMMs, and one
//!   example's rows are a strided view (row stride `B * F`) for its Gram matrices.
//! - 4-D `[B, C, H, W]`: images, one contiguous block per example.

use crate::error::{EngineError, Result};

/// A dense f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
}

impl Tensor {
    pub fn new(data: Vec<f32>, shape: Vec<usize>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(EngineError::Shape(format!(
                "tensor of shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Ok(Self { data, shape })
    }

    pub fn zeros(shape: &[usize]) -> Self {
        Self {
            data: vec![0.0; shape.iter().product()],
            shape: shape.to_vec(),
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Number of examples: dim 1 for sequences, dim 0 otherwise.
    pub fn batch(&self) -> usize {
        if self.shape.len() == 3 {
            self.shape[1]
        } else {
            self.shape.first().copied().unwrap_or(0)
        }
    }

    /// Size of the last dimension.
    pub fn last_dim(&self) -> usize {
        self.shape.last().copied().unwrap_or(0)
    }

    /// Number of rows when viewed as `[rows, last_dim]`.
    pub fn rows(&self) -> usize {
        let f = self.last_dim();
        self.data.len().checked_div(f).unwrap_or(0)
    }

    /// `[rows, last_dim]` view.
    pub fn mat(&self) -> MatRef<'_> {
        MatRef::row_major(&self.data, self.rows(), self.last_dim())
    }

    pub fn mat_mut(&mut self) -> MatMut<'_> {
        let (r, c) = (self.rows(), self.last_dim());
        MatMut::row_major(&mut self.data, r, c)
    }

    /// True if this is a time-major sequence tensor `[T, B, F]`.
    pub fn is_seq(&self) -> bool {
        self.shape.len() == 3
    }
}

/// Example index of row `r` of a `[rows, F]` view of a tensor with this shape.
#[inline]
pub fn example_of_row(shape: &[usize], r: usize) -> usize {
    if shape.len() == 3 { r % shape[1] } else { r }
}

/// A read-only strided matrix view. Element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// A mutable strided matrix view.
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

fn check_extent(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) {
    if rows > 0 && cols > 0 {
        let last = (rows - 1) * rs + (cols - 1) * cs;
        assert!(
            last < len,
            "matrix view {rows}x{cols} (rs {rs}, cs {cs}) exceeds slice of {len}"
        );
    }
}

impl<'a> MatRef<'a> {
    pub fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        check_extent(data.len(), rows, cols, rs, cs);
        Self {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }
    /// The transpose (free: swaps strides).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }
    /// Rows `start..start + n`.
    pub fn rows_range(self, start: usize, n: usize) -> Self {
        if n == 0 {
            return Self {
                data: &self.data[..0],
                rows: 0,
                cols: self.cols,
                rs: self.rs,
                cs: self.cs,
            };
        }
        Self::new(
            &self.data[start * self.rs..],
            n,
            self.cols,
            self.rs,
            self.cs,
        )
    }
    /// Columns `start..start + n`.
    pub fn cols_range(self, start: usize, n: usize) -> Self {
        if n == 0 || self.rows == 0 {
            return Self {
                data: &self.data[..0],
                rows: self.rows,
                cols: n,
                rs: self.rs,
                cs: self.cs,
            };
        }
        Self::new(
            &self.data[start * self.cs..],
            self.rows,
            n,
            self.rs,
            self.cs,
        )
    }
}

impl<'a> MatMut<'a> {
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        check_extent(data.len(), rows, cols, rs, cs);
        Self {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }
    pub fn rb(&self) -> MatRef<'_> {
        MatRef {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
        }
    }
    pub fn rb_mut(&mut self) -> MatMut<'_> {
        MatMut {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
        }
    }
    /// The transpose (free: swaps strides).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
    /// Columns `start..start + n`.
    pub fn cols_range(self, start: usize, n: usize) -> MatMut<'a> {
        if n == 0 || self.rows == 0 {
            let rows = self.rows;
            return MatMut {
                data: &mut self.data[..0],
                rows,
                cols: n,
                rs: self.rs,
                cs: self.cs,
            };
        }
        let (rows, rs, cs) = (self.rows, self.rs, self.cs);
        MatMut::new(&mut self.data[start * cs..], rows, n, rs, cs)
    }
    /// Rows `start..start + n`.
    pub fn rows_range(self, start: usize, n: usize) -> MatMut<'a> {
        if n == 0 {
            let cols = self.cols;
            return MatMut {
                data: &mut self.data[..0],
                rows: 0,
                cols,
                rs: self.rs,
                cs: self.cs,
            };
        }
        let (cols, rs, cs) = (self.cols, self.rs, self.cs);
        MatMut::new(&mut self.data[start * rs..], n, cols, rs, cs)
    }
}
