//! The Python module ``freezeframe_native``: ``Engine`` and the Arrow hand-off (PyCapsule interface).

use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};

use arrow_array::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::{Array, RecordBatch, StructArray};
use arrow_schema::DataType;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCapsule, PyDict, PyTuple};

/// A record batch that pyarrow imports with ``pa.record_batch(obj)`` (``__arrow_c_array__``).
#[pyclass(module = "freezeframe_native", frozen)]
struct ArrowBatch {
    batch: RecordBatch,
}

#[pymethods]
impl ArrowBatch {
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(&self, py: Python<'py>, requested_schema: Option<Bound<'py, PyAny>>)
                              -> PyResult<Bound<'py, PyTuple>> {
        let _ = requested_schema;
        let array = StructArray::from(self.batch.clone());
        let schema = FFI_ArrowSchema::try_from(DataType::Struct(self.batch.schema().fields().clone()))
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let data = array.into_data();
        let ffi_array = FFI_ArrowArray::new(&data);
        let schema_capsule = PyCapsule::new(py, schema, Some(CString::new("arrow_schema").unwrap()))?;
        let array_capsule = PyCapsule::new(py, ffi_array, Some(CString::new("arrow_array").unwrap()))?;
        PyTuple::new(py, [schema_capsule.into_any(), array_capsule.into_any()])
    }

    #[getter]
    fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }
}

/// A read problem as Python gets it: (kind, count, first_offset, first_packet, message).
type ProblemRow = (String, i64, i64, i64, String);

/// One node's dissection engine (see freezeframe.dissect.native).
#[pyclass(module = "freezeframe_native", unsendable)]
struct Engine {
    inner: crate::Engine,
    chunk: Option<crate::warmup::ChunkState>, // set by begin_chunk (a time chunk's warm-up, warmup.rs)
}

/// Runs ``f`` on the bytes of ``data``: a ``bytes`` object or any read-only, contiguous buffer of bytes (a
/// ``memoryview`` of a read-only file map, freezeframe.capture.mapped), read in place without a copy.
fn with_bytes<T>(data: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> T) -> PyResult<T> {
    if let Ok(bytes) = data.downcast::<PyBytes>() {
        return Ok(f(bytes.as_bytes()));
    }
    let buffer = PyBuffer::<u8>::get(data)?;
    if !buffer.readonly() || !buffer.is_c_contiguous() {
        return Err(PyTypeError::new_err("freezeframe_native: expected bytes or a read-only contiguous buffer"));
    }
    // SAFETY: the buffer is exported (and kept alive and unmoved) until `buffer` drops at the end of this function; it
    // is read-only and C-contiguous, so its `len_bytes()` bytes from `buf_ptr()` are initialised and no one writes
    // them while the slice lives. A zero-length buffer may have a dangling pointer, so it is read as an empty slice.
    let slice = if buffer.len_bytes() == 0 {
        &[][..]
    } else {
        unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, buffer.len_bytes()) }
    };
    Ok(f(slice))
}

fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| PyRuntimeError::new_err(format!("freezeframe_native: {what} panicked")))
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (node, low=None, high=None))]
    fn new(node: &str, low: Option<i128>, high: Option<i128>) -> Engine {
        let window = match (low, high) {
            (None, None) => None,
            (low, high) => Some((low.unwrap_or(i128::MIN), high.unwrap_or(i128::MAX))),
        };
        Engine { inner: crate::Engine::new(node, window), chunk: None }
    }

    /// Feeds one segment's bytes. Returns ``(None, problems)`` or ``(message, [])`` when it is not a capture;
    /// a problem is ``(kind, count, first_offset, first_packet, message)``. A panic (a bug, never expected) is
    /// reported as an ``internal_error`` problem of the segment instead of reaching Python.
    fn feed<'py>(&mut self, py: Python<'py>, data: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
        let inner = &mut self.inner;
        let fed = with_bytes(&data, |bytes| py.detach(|| catch_unwind(AssertUnwindSafe(|| inner.feed(bytes)))))?;
        let (message, problems): (Option<String>, Vec<ProblemRow>) = match fed {
            Ok(crate::Fed::NotACapture(message)) => (Some(message), Vec::new()),
            Ok(crate::Fed::Read(list)) => (None, list.into_iter()
                .map(|p| (p.kind.to_string(), p.count, p.first_offset, p.first_packet, p.message)).collect()),
            Err(_) => (None, vec![("internal_error".into(), 1, 0, 0,
                                   "the compiled dissection core failed on this segment; rest ignored".into())]),
        };
        (message, problems).into_pyobject(py)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, value) in self.inner.stats() {
            dict.set_item(name, value)?;
        }
        Ok(dict)
    }

    /// ``{table: ArrowBatch}`` for connections, dns, http and tls.
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let inner = &mut self.inner;
        let tables = py.detach(|| guarded("finish", || inner.finish()))?;
        let dict = PyDict::new(py);
        for (name, batch) in tables {
            dict.set_item(name, Bound::new(py, ArrowBatch { batch })?)?;
        }
        Ok(dict)
    }

    /// A time chunk's warm-up: feeds the segment's packets in ``[low, high)``; problems are ignored (the chunk that
    /// owns the segment reports them). Not a capture, or a panic: nothing is fed.
    fn warm_up(&mut self, py: Python<'_>, data: Bound<'_, PyAny>, low: i128, high: i128) -> PyResult<()> {
        let inner = &mut self.inner;
        with_bytes(&data, |bytes| {
            let _ = py.detach(|| catch_unwind(AssertUnwindSafe(|| inner.warm_up(bytes, low, high))));
        })
    }

    /// Ends the warm-up: TCP state kept, counts zeroed (freezeframe.dissect.warmup.begin_chunk).
    fn begin_chunk(&mut self) -> PyResult<()> {
        let inner = &mut self.inner;
        self.chunk = Some(guarded("begin_chunk", || inner.begin_chunk())?);
        Ok(())
    }

    /// ``[(conn_id, warm completeness bits or None, pseudo RTT sample, None or (payload segments, RTT samples,
    /// min, max, sum, jitter sum in ns))]`` of the chunk's flows (those ended in the warm-up left out).
    #[allow(clippy::type_complexity)]
    fn chunk_flows(&mut self) -> PyResult<Vec<crate::warmup::ChunkFlow>> {
        let inner = &mut self.inner;
        let state = self.chunk.as_ref();
        guarded("chunk_flows", || inner.chunk_flows(state))
    }

    fn payload_segments<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let inner = &mut self.inner;
        let pairs = guarded("payload_segments", || inner.payload_segments())?;
        let dict = PyDict::new(py);
        for (conn_id, count) in pairs {
            dict.set_item(conn_id, count)?;
        }
        Ok(dict)
    }
}

/// ``(packets, captured bytes)`` of a bare record walk (the benchmark's floor).
#[pyfunction]
fn walk(py: Python<'_>, data: Bound<'_, PyAny>) -> PyResult<(i64, i64)> {
    with_bytes(&data, |bytes| py.detach(|| guarded("walk", || crate::walk(bytes))))?
}

/// A Parquet file with the column chunks of ``left`` then those of ``right``, copied without decoding (splice.rs);
/// ``key_value`` is its key-value metadata. ValueError when the files do not line up.
#[pyfunction]
fn splice_parquet<'py>(py: Python<'py>, left: Bound<'py, PyAny>, right: Bound<'py, PyAny>,
                       key_value: Vec<(String, String)>) -> PyResult<Bound<'py, PyBytes>> {
    let left = with_bytes(&left, bytes::Bytes::copy_from_slice)?;
    let right = with_bytes(&right, bytes::Bytes::copy_from_slice)?;
    let spliced = py.detach(|| guarded("splice_parquet", || crate::splice::splice(left, right, key_value)))?;
    spliced.map(|out| PyBytes::new(py, &out)).map_err(PyValueError::new_err)
}

/// Column names the core produces per table, checked against freezeframe.schemas by the tests.
#[pyfunction]
fn column_names() -> Vec<(&'static str, Vec<String>)> {
    crate::tables::column_names()
}

#[pymodule]
fn freezeframe_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine>()?;
    m.add_class::<ArrowBatch>()?;
    m.add_function(wrap_pyfunction!(walk, m)?)?;
    m.add_function(wrap_pyfunction!(column_names, m)?)?;
    m.add_function(wrap_pyfunction!(splice_parquet, m)?)?;
    m.add_function(wrap_pyfunction!(crate::merge::python::merge_segments, m)?)?;
    Ok(())
}
