# Multi-precision oracle for ln A_alpha of the Poisson-subsampled Gaussian:
# A_alpha = E_{x ~ N(0, s^2)} [((1-q) + q exp((2x-1)/(2 s^2)))^alpha], integrated with mpmath.
import mpmath as mp
mp.mp.dps = 60
def log_a(q, s, a):
    q, s, a = mp.mpf(q), mp.mpf(s), mp.mpf(a)
    def logf(x):
        return -x*x/(2*s*s) - mp.log(s*mp.sqrt(2*mp.pi)) + a*mp.log((1-q) + q*mp.exp((2*x-1)/(2*s*s)))
    # Locate the peak of the log-integrand on a grid over a wide bracket, then integrate the
    # rescaled integrand over +-(60 sigma + 1) around it (the rest is below e^-1800).
    lo, hi = -60*s - 10, 60*s + a/(s*s) + 10
    xs = [lo + (hi-lo)*i/4000 for i in range(4001)]
    vals = [logf(x) for x in xs]
    m = max(vals); i = vals.index(m); peak = xs[i]
    width = 60*s + 1
    pts = [peak - width + 2*width*k/200 for k in range(201)]
    integ = mp.quad(lambda x: mp.exp(logf(x) - m), pts)
    return m + mp.log(integ)
params = [(1e-7,.1,1.01),(1e-6,.1,256),(1e-5,.1,256.1),(1e-6,1,27),(1e-4,1.0,1.5),(1e-3,1.0,2),(0.01,10,20),(0.1,100,20.5),(0.99,0.1,256),(0.999,100,256.1),
          (0.01,2.5,1.5),(0.01,2.5,2.5),(0.01,2.5,5),(0.01,2.5,50),(0.01,2.5,100),(0.1,2,5),(0.04,1.5,3.7),(0.3,0.7,12.5),(0.001,0.5,2.2),(0.5,1.0,7.3)]
print("# q\tsigma\torder\tlog_a (mpmath 60 digits, adaptive quadrature around the integrand's peak)")
for q,s,a in params:
    v = log_a(q,s,a)
    print(f"{q!r}\t{s!r}\t{a!r}\t{mp.nstr(v, 25)}")
