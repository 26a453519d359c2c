//! The node's wgpu device and the resize compute pipelines, created once and reused; its
//! parts: [`adapter`] (which adapter, how it is reported) and [`pool`] (reused buffers).

use std::borrow::Cow;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::filter::{Filter, Weights};
use super::srgb;

mod adapter;
mod pool;

pub use adapter::{adapter_on, best_adapter, hardware_adapters, summarise, AdapterSummary};
pub use pool::PoolStats;
use pool::{BufferPool, READBACK, STORAGE_IN, STORAGE_OUT, UNIFORM};

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

/// One wgpu device with the resize pipelines compiled.
pub struct GpuResizer {
    device: wgpu::Device,
    queue: wgpu::Queue,
    horizontal: wgpu::ComputePipeline,
    vertical: wgpu::ComputePipeline,
    horizontal_plane: wgpu::ComputePipeline,
    vertical_plane: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    lut: wgpu::Buffer,
    pool: BufferPool,
    summary: AdapterSummary,
    max_binding: u64,
}

const WG_X: u32 = 64;
const WG_Y: u32 = 4;

/// The shader's `Params`, field for field.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    src_w: u32,
    src_h: u32,
    dst_w: u32,
    dst_h: u32,
    taps_x: u32,
    taps_y: u32,
    y_starts: u32,
    y_coefs: u32,
    src_stride: u32,
    dst_stride: u32,
    _pad: [u32; 2],
}

/// The two dispatches of a resize: pipeline and the grid (width, height) it covers.
type Passes<'a> = [(&'a wgpu::ComputePipeline, u32, u32); 2];

/// A buffer taken from the pool, with the usage it goes back under.
struct Pooled {
    usage: wgpu::BufferUsages,
    buf: wgpu::Buffer,
}

/// Work buffers of one resize, bound as shaders/resize.wgsl declares them, returned to the
/// pool when it is done.
struct Job {
    /// Binding 0: the `Params` uniform.
    params: Pooled,
    /// Binding 1: the source pixels (or plane samples).
    src: Pooled,
    /// Binding 2: the horizontal pass' output, the vertical pass' input.
    mid: Pooled,
    /// Binding 3: the result.
    dst: Pooled,
    /// Bindings 4 and 5: filter weights and the first source index of each output sample,
    /// horizontal then vertical.
    coefs: Pooled,
    starts: Pooled,
    /// Where the result is copied to be mapped and read.
    readback: Pooled,
    bind: wgpu::BindGroup,
}

impl Job {
    fn buffers(self) -> [Pooled; 7] {
        [
            self.params,
            self.src,
            self.mid,
            self.dst,
            self.coefs,
            self.starts,
            self.readback,
        ]
    }
}

impl GpuResizer {
    /// Pick the best adapter (discrete > integrated > virtual > CPU/lavapipe) and build the
    /// pipelines.
    pub fn new() -> Result<Self, GpuError> {
        pollster::block_on(async { Self::on(best_adapter().await).await })
    }

    /// Build the pipelines on the adapter of the GPU on PCI bus `bus` (one node's GPUs each
    /// resize on their own adapter).
    pub fn on_bus(bus: &str) -> Result<Self, GpuError> {
        pollster::block_on(async { Self::on(adapter_on(bus).await).await })
    }

    async fn on(adapter: Option<wgpu::Adapter>) -> Result<Self, GpuError> {
        let adapter = adapter.ok_or(GpuError::NoAdapter)?;
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
        let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let storage = |read_only| wgpu::BufferBindingType::Storage { read_only };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("resize"),
            entries: &[
                entry(0, wgpu::BufferBindingType::Uniform),
                entry(1, storage(true)),
                entry(2, storage(false)),
                entry(3, storage(false)),
                entry(4, storage(true)),
                entry(5, storage(true)),
                entry(6, storage(true)),
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
        let table: Vec<f32> = srgb::to_linear_table().iter().map(|v| *v as f32).collect();
        let lut = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("srgb lut"),
            size: 256 * 4,
            usage: STORAGE_IN,
            mapped_at_creation: false,
        });
        queue.write_buffer(&lut, 0, bytemuck::cast_slice(&table));
        let max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        Ok(Self {
            summary: summarise(&info),
            horizontal: pipeline("horizontal"),
            vertical: pipeline("vertical"),
            horizontal_plane: pipeline("horizontal_plane"),
            vertical_plane: pipeline("vertical_plane"),
            device,
            queue,
            layout,
            lut,
            pool: BufferPool::default(),
            max_binding,
        })
    }

    /// The adapter in use.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// How often the buffer pool created and reused buffers.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Take pooled buffers, upload the source, tables and params, and bind them.
    fn prepare(
        &self,
        src: &[u8],
        mut params: Params,
        mid_size: u64,
        dst_size: u64,
        filter: Filter,
    ) -> Result<Job, GpuError> {
        let wx = Weights::new(filter, params.src_w, params.dst_w);
        let wy = Weights::new(filter, params.src_h, params.dst_h);
        params.taps_x = wx.taps as u32;
        params.taps_y = wy.taps as u32;
        params.y_starts = wx.starts.len() as u32;
        params.y_coefs = wx.coefs.len() as u32;
        let coefs: Vec<f32> = wx
            .coefs
            .iter()
            .chain(&wy.coefs)
            .map(|v| *v as f32)
            .collect();
        let starts: Vec<u32> = wx.starts.iter().chain(&wy.starts).copied().collect();

        let src_size = (src.len() as u64).next_multiple_of(4);
        let needed = src_size.max(mid_size).max(dst_size);
        if needed > self.max_binding {
            return Err(GpuError::TooLarge {
                needed,
                limit: self.max_binding,
            });
        }
        let d = &self.device;
        let lim = self.max_binding;
        let take = |usage, size| Pooled {
            usage,
            buf: self.pool.take(d, usage, size, lim),
        };
        let (p, srcb, mid, dst, cb, sb, readback) = (
            take(UNIFORM, std::mem::size_of::<Params>() as u64),
            take(STORAGE_IN, src_size),
            take(STORAGE_OUT, mid_size),
            take(STORAGE_OUT, dst_size),
            take(STORAGE_IN, coefs.len() as u64 * 4),
            take(STORAGE_IN, starts.len() as u64 * 4),
            take(READBACK, dst_size),
        );
        let q = &self.queue;
        q.write_buffer(&p.buf, 0, bytemuck::bytes_of(&params));
        if src.len().is_multiple_of(4) {
            q.write_buffer(&srcb.buf, 0, src);
        } else {
            let mut padded = src.to_vec();
            padded.resize(src_size as usize, 0);
            q.write_buffer(&srcb.buf, 0, &padded);
        }
        q.write_buffer(&cb.buf, 0, bytemuck::cast_slice(&coefs));
        q.write_buffer(&sb.buf, 0, bytemuck::cast_slice(&starts));
        fn entry(binding: u32, b: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
            wgpu::BindGroupEntry {
                binding,
                resource: b.as_entire_binding(),
            }
        }
        let bind = d.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("resize"),
            layout: &self.layout,
            entries: &[
                entry(0, &p.buf),
                entry(1, &srcb.buf),
                entry(2, &mid.buf),
                entry(3, &dst.buf),
                entry(4, &cb.buf),
                entry(5, &sb.buf),
                entry(6, &self.lut),
            ],
        });
        Ok(Job {
            params: p,
            src: srcb,
            mid,
            dst,
            coefs: cb,
            starts: sb,
            readback,
            bind,
        })
    }

    fn record(&self, encoder: &mut wgpu::CommandEncoder, job: &Job, passes: Passes<'_>) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("resize"),
            timestamp_writes: None,
        });
        pass.set_bind_group(0, &job.bind, &[]);
        for (pipeline, x, y) in passes {
            pass.set_pipeline(pipeline);
            pass.dispatch_workgroups(x.div_ceil(WG_X), y.div_ceil(WG_Y), 1);
        }
    }

    /// Run the two passes, read `dst_size` bytes back, and return the buffers to the pool.
    fn run(&self, job: Job, passes: Passes<'_>, dst_size: u64) -> Result<Vec<u8>, GpuError> {
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("resize"),
            });
        self.record(&mut encoder, &job, passes);
        encoder.copy_buffer_to_buffer(&job.dst.buf, 0, &job.readback.buf, 0, dst_size);
        self.queue.submit([encoder.finish()]);
        let out = self.read(&job.readback.buf, dst_size);
        self.give_back(job);
        out
    }

    fn give_back(&self, job: Job) {
        for p in job.buffers() {
            self.pool.give(p.usage, p.buf);
        }
    }

    fn read(&self, readback: &wgpu::Buffer, size: u64) -> Result<Vec<u8>, GpuError> {
        let (tx, rx) = mpsc::channel();
        readback.map_async(wgpu::MapMode::Read, 0..size, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        rx.recv()
            .map_err(|e| GpuError::Readback(e.to_string()))?
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let out = readback
            .get_mapped_range(0..size)
            .map_err(|e| GpuError::Readback(e.to_string()))?
            .to_vec();
        readback.unmap();
        Ok(out)
    }

    fn rgba_job(
        &self,
        src: &[u8],
        src_w: u32,
        src_h: u32,
        dst_w: u32,
        dst_h: u32,
        filter: Filter,
    ) -> Result<(Job, Passes<'_>, u64), GpuError> {
        let expected = src_w as usize * src_h as usize * 4;
        if src.len() != expected || src_w == 0 || src_h == 0 || dst_w == 0 || dst_h == 0 {
            return Err(GpuError::BadInput {
                expected,
                got: src.len(),
            });
        }
        let params = Params {
            src_w,
            src_h,
            dst_w,
            dst_h,
            ..bytemuck::Zeroable::zeroed()
        };
        let mid_size = dst_w as u64 * src_h as u64 * 16;
        let dst_size = dst_w as u64 * dst_h as u64 * 4;
        let passes = [
            (&self.horizontal, dst_w, src_h),
            (&self.vertical, dst_w, dst_h),
        ];
        Ok((
            self.prepare(src, params, mid_size, dst_size, filter)?,
            passes,
            dst_size,
        ))
    }

    /// Resize packed RGBA8 (sRGB, straight alpha) in linear light with premultiplied alpha;
    /// see shaders/resize.wgsl.
    pub fn resize_rgba8(
        &self,
        src: &[u8],
        src_w: u32,
        src_h: u32,
        dst_w: u32,
        dst_h: u32,
        filter: Filter,
    ) -> Result<Vec<u8>, GpuError> {
        let (job, passes, dst_size) = self.rgba_job(src, src_w, src_h, dst_w, dst_h, filter)?;
        self.run(job, passes, dst_size)
    }

    /// The kernel alone, for the bench: upload once, run both passes `iterations` times,
    /// wait for the GPU, and return the time per iteration (no transfers counted).
    pub fn time_kernel(
        &self,
        src: &[u8],
        (src_w, src_h): (u32, u32),
        (dst_w, dst_h): (u32, u32),
        filter: Filter,
        iterations: u32,
    ) -> Result<Duration, GpuError> {
        let (job, passes, _) = self.rgba_job(src, src_w, src_h, dst_w, dst_h, filter)?;
        let wait = || {
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| GpuError::Readback(e.to_string()))
        };
        // One untimed run warms caches and finishes the uploads.
        let mut encoder = self.device.create_command_encoder(&Default::default());
        self.record(&mut encoder, &job, passes);
        self.queue.submit([encoder.finish()]);
        wait()?;
        let started = Instant::now();
        for _ in 0..iterations {
            let mut encoder = self.device.create_command_encoder(&Default::default());
            self.record(&mut encoder, &job, passes);
            self.queue.submit([encoder.finish()]);
        }
        wait()?;
        let took = started.elapsed() / iterations.max(1);
        self.give_back(job);
        Ok(took)
    }

    /// Resize one 8-bit video plane (Y, U or V) of `src_w`×`src_h` samples with rows
    /// `src_stride` bytes apart, filtering the coded values as they are (video's convention).
    /// Returns the plane with rows `dst_w` rounded up to 4 bytes apart, and that stride.
    #[allow(clippy::too_many_arguments)]
    pub fn resize_plane(
        &self,
        src: &[u8],
        src_w: u32,
        src_h: u32,
        src_stride: u32,
        dst_w: u32,
        dst_h: u32,
        filter: Filter,
    ) -> Result<(Vec<u8>, u32), GpuError> {
        let expected = src_stride as usize * (src_h as usize).saturating_sub(1) + src_w as usize;
        if src.len() < expected
            || src_stride < src_w
            || src_w == 0
            || src_h == 0
            || dst_w == 0
            || dst_h == 0
        {
            return Err(GpuError::BadInput {
                expected,
                got: src.len(),
            });
        }
        let dst_stride = dst_w.next_multiple_of(4);
        let params = Params {
            src_w,
            src_h,
            dst_w,
            dst_h,
            src_stride,
            dst_stride,
            ..bytemuck::Zeroable::zeroed()
        };
        let mid_size = (dst_stride / 4) as u64 * src_h as u64 * 16;
        let dst_size = dst_stride as u64 * dst_h as u64;
        let job = self.prepare(src, params, mid_size, dst_size, filter)?;
        let words = dst_stride / 4;
        let out = self.run(
            job,
            [
                (&self.horizontal_plane, words, src_h),
                (&self.vertical_plane, words, dst_h),
            ],
            dst_size,
        )?;
        Ok((out, dst_stride))
    }
}
