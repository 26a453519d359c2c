//! Kiln's node: pulls jobs from the queue, runs the media pipeline, reports progress.

pub mod gpu;
pub mod host;
pub mod imaging;
pub mod media;
pub mod metrics;
pub mod node;
pub mod quality;
pub mod worker;

/// What must be set before any thread starts; call first thing in `main`. Each is left as the
/// operator set it, if set:
/// - CUDA numbers GPUs as NVML does ([`host::use_pci_bus_order`]);
/// - SVT-AV1 logs errors only (`SVT_LOG=1`): the library prints a dozen-line banner at every
///   encoder open, outside FFmpeg's log and Kiln's;
/// - Mesa's Vulkan device-select layer is off (`NODEVICE_SELECT=1`): Kiln picks its adapters
///   itself (by rank and PCI bus), and the layer, looking for a display to choose by, prints
///   "error: XDG_RUNTIME_DIR is invalid" twice on a headless server.
pub fn prepare_process() {
    host::use_pci_bus_order();
    for (var, value) in [("SVT_LOG", "1"), ("NODEVICE_SELECT", "1")] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, value);
        }
    }
}
