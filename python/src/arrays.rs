//! NumPy arguments in: borrowed where the layout allows, converted (one copy) otherwise, and
//! every refusal names the Python argument with the expected dtype and shape.
//!
//! The `numpy` crate's own refusal of a wrong dtype or rank reads "'ndarray' object is not an
//! instance of 'ndarray'"; here an argument is first inspected as an untyped array so the message
//! can say what was expected and what came.
//!
//! When a copy happens (docs/python.md, "Copies"):
//! - a float64 array that is C-contiguous (or any 1-D float64 array with unit stride) is
//!   borrowed: Rust reads NumPy's buffer (`array_data_pointer` shows it);
//! - other real dtypes (float32, float16, integers, bool) are converted to float64, and
//!   non-contiguous float64 arrays are made contiguous: one copy;
//! - Python lists and other sequences go through `numpy.asarray(x, dtype=float64)`: one copy.

use numpy::ndarray::Dimension;
use numpy::{
    Element, PyArray, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// "(3, 4)" as NumPy prints shapes.
fn shape_text(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// How many dimensions D has (D is always a fixed-rank ndarray dimension here).
fn ndim_of<D: Dimension>() -> usize {
    D::NDIM.expect("fixed-rank dimension")
}

/// A float64 array of rank D, borrowed when possible. `shape` describes the expected shape in
/// the caller's words, e.g. "[n]" or "[k, n, q]".
pub fn float_array<'py, D: Dimension>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    shape: &str,
) -> PyResult<PyReadonlyArray<'py, f64, D>> {
    typed_array::<f64, D>(obj, name, shape, "float64", b"fiub")
}

/// A bool array of rank D (bool arrays are borrowed; 0/1 integers are converted).
pub fn bool_array<'py, D: Dimension>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    shape: &str,
) -> PyResult<PyReadonlyArray<'py, bool, D>> {
    let arr = to_ndarray(obj, name, shape, "bool")?;
    let kind = arr.dtype().kind();
    if kind == b'i' || kind == b'u' {
        // Integers are accepted only as 0/1 flags.
        let np = obj.py().import("numpy")?;
        let ok: bool = np
            .call_method1("isin", (&arr, (0, 1)))?
            .call_method0("all")?
            .extract()?;
        if !ok {
            return Err(PyValueError::new_err(format!(
                "{name}: expected a {shape} array of bool (True = member); got integers other than 0 and 1"
            )));
        }
    }
    typed_array::<bool, D>(arr.as_any(), name, shape, "bool", b"biu")
}

/// An int64 array of rank D (integer dtypes are converted; floats are refused).
pub fn int_array<'py, D: Dimension>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    shape: &str,
) -> PyResult<PyReadonlyArray<'py, i64, D>> {
    typed_array::<i64, D>(obj, name, shape, "int64", b"iub")
}

/// `obj` as an ndarray (a sequence goes through `numpy.asarray`), or a TypeError naming `name`.
fn to_ndarray<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    shape: &str,
    dtype: &str,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    if let Ok(a) = obj.cast::<PyUntypedArray>() {
        return Ok(a.clone());
    }
    let np = obj.py().import("numpy")?;
    let converted = np.call_method1("asarray", (obj,)).map_err(|e| {
        PyTypeError::new_err(format!(
            "{name}: expected a {shape} array of {dtype}, got {} ({e})",
            type_name(obj)
        ))
    })?;
    Ok(converted.cast::<PyUntypedArray>()?.clone())
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an object".into())
}

fn typed_array<'py, T: Element, D: Dimension>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    shape: &str,
    dtype: &str,
    convertible_kinds: &[u8],
) -> PyResult<PyReadonlyArray<'py, T, D>> {
    let py = obj.py();
    let arr = to_ndarray(obj, name, shape, dtype)?;
    let want = ndim_of::<D>();
    let descr = arr.dtype();
    let kind = descr.kind();
    // Only an error message needs the dtype's name (formatting it costs microseconds).
    let found_dtype = || {
        descr
            .str()
            .map(|s| s.to_string())
            .unwrap_or_else(|_| "?".into())
    };
    if !convertible_kinds.contains(&kind) {
        return Err(PyTypeError::new_err(format!(
            "{name}: expected a {shape} array of {dtype}, got dtype {} with shape {}",
            found_dtype(),
            shape_text(arr.shape())
        )));
    }
    if arr.ndim() != want {
        return Err(PyValueError::new_err(format!(
            "{name}: expected a {want}-D array of {dtype} with shape {shape}, got a {}-D array of shape {}",
            arr.ndim(),
            shape_text(arr.shape())
        )));
    }
    // Borrow when dtype and layout allow; otherwise one conversion (a copy).
    let same_dtype = descr.is_equiv_to(&numpy::dtype::<T>(py));
    let contiguous = arr.is_c_contiguous();
    let arr = if same_dtype && contiguous {
        arr
    } else {
        let np = py.import("numpy")?;
        let converted = np
            .call_method1("ascontiguousarray", (&arr, numpy::dtype::<T>(py).as_any()))
            .map_err(|e| {
                PyTypeError::new_err(format!(
                    "{name}: cannot convert dtype {} to {dtype}: {e}",
                    found_dtype()
                ))
            })?;
        converted.cast::<PyUntypedArray>()?.clone()
    };
    let typed = arr.cast::<PyArray<T, D>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name}: expected a {shape} array of {dtype}, got dtype {} with shape {}",
            found_dtype(),
            shape_text(arr.shape())
        ))
    })?;
    typed.try_readonly().map_err(|e| {
        PyValueError::new_err(format!(
            "{name}: the array is being written elsewhere ({e})"
        ))
    })
}

/// The array's contents as a slice (the arrays above are always contiguous).
pub fn slice<'a, T: Element, D: Dimension>(
    a: &'a PyReadonlyArray<'_, T, D>,
    name: &str,
) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|e| {
        PyValueError::new_err(format!("{name}: not contiguous after conversion ({e})"))
    })
}

/// Refuses an empty array, naming it.
pub fn non_empty(values: &[f64], name: &str, shape: &str) -> PyResult<()> {
    if values.is_empty() {
        return Err(PyValueError::new_err(format!(
            "{name}: empty; expected at least one value (shape {shape})"
        )));
    }
    Ok(())
}

/// Refuses NaN (and, with `finite`, infinities), naming the argument and the first bad index.
pub fn check_values(values: &[f64], name: &str, finite: bool) -> PyResult<()> {
    let bad = values
        .iter()
        .position(|v| v.is_nan() || (finite && v.is_infinite()));
    if let Some(i) = bad {
        return Err(PyValueError::new_err(format!(
            "{name}: element {i} is {}; every value must be {}",
            values[i],
            if finite {
                "a finite number"
            } else {
                "a number (not NaN)"
            }
        )));
    }
    Ok(())
}

/// The address of the float64 buffer the bindings would hand to Rust for `values` (a test hook
/// for docs/python.md's "no copy" claim: equal to `values.ctypes.data` exactly when the array
/// is borrowed, not copied).
#[pyfunction]
pub fn array_data_pointer(values: &Bound<'_, PyAny>) -> PyResult<usize> {
    let a = float_array::<numpy::Ix1>(values, "values", "[n]")?;
    Ok(slice(&a, "values")?.as_ptr() as usize)
}
