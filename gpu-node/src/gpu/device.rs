//! The node's wgpu device and the resize compute pipelines, created once and reused.

use std::borrow::Cow;
use std::sync::mpsc;

use wgpu::util::DeviceExt;

/// The adapter a node resizes on, as reported in its capabilities.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AdapterSummary {
    pub name: String,
    /// `discrete_gpu`, `integrated_gpu`, `virtual_gpu`, `cpu` (lavapipe) or `other`.
    pub device_type: String,
    pub backend: String,
    pub driver: String,
}

/// Why the GPU path could not run.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no wgpu adapter found")]
    NoAdapter,
    #[error("device request failed: {0}")]
    Device(String),
    #[error("image too large for this adapter: {needed} bytes needed, {limit} allowed per buffer")]
    TooLarge { needed: u64, limit: u64 },
    #[error("resize dimensions must be non-zero and the source {expected} bytes, got {got}")]
    BadInput { expected: usize, got: usize },
    #[error("GPU readback failed: {0}")]
    Readback(String),
}

/// One wgpu device with the two resize pipelines compiled.
pub struct GpuResizer {
    device: wgpu::Device,
    queue: wgpu::Queue,
    horizontal: wgpu::ComputePipeline,
    vertical: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    summary: AdapterSummary,
    max_binding: u64,
}

const WORKGROUP: u32 = 16;

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

impl GpuResizer {
    /// Pick the best adapter (discrete > integrated > virtual > CPU/lavapipe) and build the
    /// pipelines.
    pub fn new() -> Result<Self, GpuError> {
        pollster::block_on(Self::new_async())
    }

    async fn new_async() -> Result<Self, GpuError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let mut adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
        adapters.sort_by_key(|a| rank(a.get_info().device_type));
        let adapter = adapters.into_iter().next().ok_or(GpuError::NoAdapter)?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("kiln-resize"),
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::Device(e.to_string()))?;

        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("resize.wgsl"),
            source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(include_str!(
                "../../../shaders/resize.wgsl"
            ))),
        });
        let storage = |binding, read_only| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("resize"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                storage(1, true),
                storage(2, false),
                storage(3, false),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("resize"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = |entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let horizontal = pipeline("horizontal");
        let vertical = pipeline("vertical");
        let max_binding =
            (limits.max_storage_buffer_binding_size as u64).min(limits.max_buffer_size);
        Ok(Self {
            summary: AdapterSummary {
                name: info.name.clone(),
                device_type: format!("{:?}", info.device_type)
                    .chars()
                    .enumerate()
                    .flat_map(|(i, c)| {
                        let lower = c.to_ascii_lowercase();
                        if c.is_ascii_uppercase() && i > 0 {
                            vec!['_', lower]
                        } else {
                            vec![lower]
                        }
                    })
                    .collect(),
                backend: format!("{:?}", info.backend).to_ascii_lowercase(),
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
            },
            device,
            queue,
            horizontal,
            vertical,
            layout,
            max_binding,
        })
    }

    /// The adapter in use.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// Resize packed RGBA8 (sRGB, straight alpha); see shaders/resize.wgsl.
    pub fn resize_rgba8(
        &self,
        src: &[u8],
        src_w: u32,
        src_h: u32,
        dst_w: u32,
        dst_h: u32,
    ) -> Result<Vec<u8>, GpuError> {
        let expected = src_w as usize * src_h as usize * 4;
        if src.len() != expected || src_w == 0 || src_h == 0 || dst_w == 0 || dst_h == 0 {
            return Err(GpuError::BadInput {
                expected,
                got: src.len(),
            });
        }
        let mid_size = dst_w as u64 * src_h as u64 * 16;
        let dst_size = dst_w as u64 * dst_h as u64 * 4;
        let needed = (src.len() as u64).max(mid_size).max(dst_size);
        if needed > self.max_binding {
            return Err(GpuError::TooLarge {
                needed,
                limit: self.max_binding,
            });
        }
        let d = &self.device;
        let params = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("resize params"),
            contents: bytemuck::cast_slice(&[src_w, src_h, dst_w, dst_h]),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let src_buf = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("resize src"),
            contents: src,
            usage: wgpu::BufferUsages::STORAGE,
        });
        let mid = d.create_buffer(&wgpu::BufferDescriptor {
            label: Some("resize mid"),
            size: mid_size,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let dst = d.create_buffer(&wgpu::BufferDescriptor {
            label: Some("resize dst"),
            size: dst_size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = d.create_buffer(&wgpu::BufferDescriptor {
            label: Some("resize readback"),
            size: dst_size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bind = d.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("resize"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: params.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: src_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: mid.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: dst.as_entire_binding(),
                },
            ],
        });
        let mut encoder = d.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("resize"),
        });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("resize"),
                timestamp_writes: None,
            });
            pass.set_bind_group(0, &bind, &[]);
            pass.set_pipeline(&self.horizontal);
            pass.dispatch_workgroups(dst_w.div_ceil(WORKGROUP), src_h.div_ceil(WORKGROUP), 1);
            pass.set_pipeline(&self.vertical);
            pass.dispatch_workgroups(dst_w.div_ceil(WORKGROUP), dst_h.div_ceil(WORKGROUP), 1);
        }
        encoder.copy_buffer_to_buffer(&dst, 0, &readback, 0, dst_size);
        self.queue.submit([encoder.finish()]);

        let (tx, rx) = mpsc::channel();
        readback.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        d.poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        rx.recv()
            .map_err(|e| GpuError::Readback(e.to_string()))?
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let out = readback
            .get_mapped_range(..)
            .map_err(|e| GpuError::Readback(e.to_string()))?
            .to_vec();
        readback.unmap();
        Ok(out)
    }
}
