//! Work buffers reused across resizes: free buffers by usage, best-fit, capped in total, so a
//! request does not allocate from scratch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub(super) const STORAGE_IN: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_DST);
pub(super) const STORAGE_OUT: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC);
pub(super) const UNIFORM: wgpu::BufferUsages =
    wgpu::BufferUsages::UNIFORM.union(wgpu::BufferUsages::COPY_DST);
pub(super) const READBACK: wgpu::BufferUsages =
    wgpu::BufferUsages::MAP_READ.union(wgpu::BufferUsages::COPY_DST);

/// Buffer reuse counters, for tests and the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    pub created: u64,
    pub reused: u64,
    pub pooled_bytes: u64,
}

/// Free buffers by usage, best-fit; the oldest are dropped beyond `POOL_CAP_BYTES`.
#[derive(Default)]
pub(super) struct BufferPool {
    free: Mutex<Vec<(wgpu::BufferUsages, wgpu::Buffer)>>,
    created: AtomicU64,
    reused: AtomicU64,
}

const POOL_CAP_BYTES: u64 = 512 << 20;
/// Sizes are rounded up to this so that similar requests share buffers.
const POOL_GRANULE: u64 = 256 << 10;

impl BufferPool {
    pub(super) fn take(
        &self,
        device: &wgpu::Device,
        usage: wgpu::BufferUsages,
        size: u64,
        limit: u64,
    ) -> wgpu::Buffer {
        {
            let mut free = self.free.lock().expect("pool lock");
            let best = free
                .iter()
                .enumerate()
                .filter(|(_, (u, b))| {
                    *u == usage && b.size() >= size && b.size() <= 2 * size.max(POOL_GRANULE)
                })
                .min_by_key(|(_, (_, b))| b.size())
                .map(|(i, _)| i);
            if let Some(i) = best {
                self.reused.fetch_add(1, Ordering::Relaxed);
                return free.remove(i).1;
            }
        }
        self.created.fetch_add(1, Ordering::Relaxed);
        // Uniform bindings have a small size limit: those stay exact.
        let rounded = if usage.contains(wgpu::BufferUsages::UNIFORM) {
            size
        } else {
            size.div_ceil(POOL_GRANULE) * POOL_GRANULE
        };
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln pooled"),
            size: rounded.min(limit).max(size.max(16)),
            usage,
            mapped_at_creation: false,
        })
    }

    pub(super) fn give(&self, usage: wgpu::BufferUsages, buf: wgpu::Buffer) {
        let mut free = self.free.lock().expect("pool lock");
        free.push((usage, buf));
        let mut total: u64 = free.iter().map(|(_, b)| b.size()).sum();
        while total > POOL_CAP_BYTES && !free.is_empty() {
            total -= free.remove(0).1.size();
        }
    }

    pub(super) fn stats(&self) -> PoolStats {
        PoolStats {
            created: self.created.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
            pooled_bytes: self
                .free
                .lock()
                .expect("pool lock")
                .iter()
                .map(|(_, b)| b.size())
                .sum(),
        }
    }
}
