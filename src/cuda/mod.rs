//! CUDA discovery without CUDA: which NVIDIA GPUs this process will see as `cuda:N`, read from
//! NVML and numbered as the CUDA runtime (and torch) will number them.
//!
//! `visible` and `order` are pure logic over device records (unit-tested without NVML);
//! `nvml` loads the library once per process and turns every NVML error into a sentence;
//! `status` is what discovery says about itself, as data, written out in one place.

pub mod nvml;
pub mod order;
pub mod status;
pub mod visible;

pub use nvml::discover;
pub use order::{CudaDevice, DeviceOrder, GpuRecord, MigRecord};
pub use status::{Discovery, OrderSource, Status};
