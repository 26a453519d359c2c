//! Which adapter a node resizes on: every one wgpu finds, ranked discrete > integrated >
//! virtual > CPU (lavapipe), described the way capabilities report it.

/// The adapter a node resizes on, as reported in its capabilities.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AdapterSummary {
    pub name: String,
    /// `discrete_gpu`, `integrated_gpu`, `virtual_gpu`, `cpu` (lavapipe) or `other`.
    pub device_type: String,
    pub backend: String,
    pub driver: String,
}

impl AdapterSummary {
    /// Preference order: discrete > integrated > virtual > CPU (lavapipe) > other.
    pub fn rank(&self) -> u8 {
        match self.device_type.as_str() {
            "discrete_gpu" => 0,
            "integrated_gpu" => 1,
            "virtual_gpu" => 2,
            "cpu" => 3,
            _ => 4,
        }
    }

    /// Whether the adapter is a real GPU rather than a CPU Vulkan driver such as lavapipe.
    pub fn is_hardware(&self) -> bool {
        matches!(
            self.device_type.as_str(),
            "discrete_gpu" | "integrated_gpu" | "virtual_gpu"
        )
    }
}

/// A wgpu instance over the primary backends (Vulkan, Metal, DX12) unless `WGPU_BACKEND` asks
/// for others: the GL backend finds nothing the shader path would use and, through EGL, prints
/// "XDG_RUNTIME_DIR is invalid" errors on a headless server.
fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if std::env::var_os("WGPU_BACKEND").is_none() {
        desc.backends = wgpu::Backends::PRIMARY;
    }
    wgpu::Instance::new(desc)
}

/// The most preferred adapter on this machine (see `AdapterSummary::rank`), if any.
pub async fn best_adapter() -> Option<wgpu::Adapter> {
    let instance = instance();
    instance
        .enumerate_adapters(wgpu::Backends::all())
        .await
        .into_iter()
        .min_by_key(|a| summarise(&a.get_info()).rank())
}

/// Every hardware adapter wgpu finds with the PCI bus it sits on: `(bus id, description)`,
/// for matching each NVIDIA GPU to its adapter.
pub fn hardware_adapters() -> Vec<(String, String)> {
    let instance = instance();
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .into_iter()
        .map(|a| a.get_info())
        .filter(|i| !i.device_pci_bus_id.is_empty())
        .map(|i| (i.device_pci_bus_id.clone(), summarise(&i)))
        .filter(|(_, s)| s.is_hardware())
        .map(|(bus, s)| (bus, format!("{} ({})", s.name, s.backend)))
        .collect()
}

/// The hardware adapter on PCI bus `bus` (as NVML writes it), if wgpu finds one.
pub async fn adapter_on(bus: &str) -> Option<wgpu::Adapter> {
    let instance = instance();
    instance
        .enumerate_adapters(wgpu::Backends::all())
        .await
        .into_iter()
        .filter(|a| crate::host::same_pci_bus(&a.get_info().device_pci_bus_id, bus))
        .min_by_key(|a| summarise(&a.get_info()).rank())
}

/// Describe an adapter the way capabilities report it.
pub fn summarise(info: &wgpu::AdapterInfo) -> AdapterSummary {
    AdapterSummary {
        name: info.name.clone(),
        device_type: snake(info.device_type).to_string(),
        backend: format!("{:?}", info.backend).to_ascii_lowercase(),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
    }
}

fn snake(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete_gpu",
        wgpu::DeviceType::IntegratedGpu => "integrated_gpu",
        wgpu::DeviceType::VirtualGpu => "virtual_gpu",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    }
}
