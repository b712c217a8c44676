//! spcs data mover: RAW and QCOW2 conversion with sparse-aware, multi-threaded copying.
//! Built as the `spcs._datamover` Python extension; the Rust API is used by the tests.

pub mod codec;
pub mod crypt;
pub mod digest;
pub mod download;
pub mod error;
pub mod http;
pub mod image;
pub mod info;
pub mod job;
pub mod luks;
pub mod pipeline;
mod py;
pub mod qcow2;
pub mod source;
pub mod sys;
pub mod target;

use pyo3::prelude::*;

#[pymodule]
fn _datamover(m: &Bound<'_, PyModule>) -> PyResult<()> {
    py::register(m)
}
