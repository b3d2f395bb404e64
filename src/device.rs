//! Where models run: the user's choice of device (parsed from its name) opened as candle's
//! device, and the floating-point type chosen for it.

use std::str::FromStr;

use candle_core::{DType, Device};

use crate::{Error, Result};

/// Where the models run, as the user named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The first GPU the binary was built for, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
    Metal,
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            "metal" => Ok(Self::Metal),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(format!(
                    "unknown device `{s}`: expected auto, cpu, cuda, cuda:N or metal"
                )),
            },
        }
    }
}

impl DeviceSpec {
    /// Opens the device. A GPU that this binary was not built for is an error that says which
    /// cargo feature to build with, never a silent fall-back to the CPU.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto => {
                if candle_core::utils::cuda_is_available() {
                    Ok(Device::new_cuda(0)?)
                } else if candle_core::utils::metal_is_available() {
                    Ok(Device::new_metal(0)?)
                } else {
                    Ok(Device::Cpu)
                }
            }
            Self::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(Error::Usage(
                        "--device cuda: this mtsum was built without CUDA; rebuild with `cargo build --release --features cuda`".into(),
                    ));
                }
                Ok(Device::new_cuda(n)?)
            }
            Self::Metal => {
                if !candle_core::utils::metal_is_available() {
                    return Err(Error::Usage(
                        "--device metal: this mtsum was built without Metal; rebuild with `cargo build --release --features metal`".into(),
                    ));
                }
                Ok(Device::new_metal(0)?)
            }
        }
    }
}

/// f32 on the CPU (exact parity with transformers), f16 on a GPU, unless the user chose.
pub fn choose_dtype(device: &Device, chosen: Option<DType>) -> DType {
    match chosen {
        Some(d) => d,
        None if device.is_cpu() => DType::F32,
        None => DType::F16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cuda:1".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(1)));
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }
}
