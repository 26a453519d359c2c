//! The GPU a job was placed on, as the media code sees it. The node places a job (see
//! [`super::HostGpus::place`]) and runs its blocking work inside [`with`]; the media code reads
//! [`current`] when it plans a pass and from then on carries the index itself (into its decode
//! and encode threads). Outside any scope — a library caller, a test, a bench — the media code
//! keeps its old default: CUDA device 0 when it opened.

use std::cell::RefCell;
use std::sync::Arc;

/// Told of a fault that is the device's (not the input's): the job then finishes elsewhere.
pub trait DeviceFaults: Send + Sync {
    /// GPU `gpu` failed with `reason`; the GPU to retry on, if another can take the job.
    fn fault(&self, gpu: u32, reason: &str) -> Option<u32>;
}

/// Where a job's GPU work runs.
#[derive(Clone, Default)]
pub struct Placement {
    /// The GPU for its decode, `scale_cuda` and NVENC session (`None`: the CPU).
    pub gpu: Option<u32>,
    /// Whether an NVENC session on that GPU is the job's (else it encodes on the CPU).
    pub nvenc: bool,
    /// The GPU's PCI bus id, for the image shader's wgpu adapter.
    pub pci_bus_id: Option<String>,
    /// Where its device faults are reported.
    pub faults: Option<Arc<dyn DeviceFaults>>,
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placement")
            .field("gpu", &self.gpu)
            .field("nvenc", &self.nvenc)
            .finish()
    }
}

impl Placement {
    /// Tell the node that `gpu` failed with `reason`; the GPU to retry on, if any.
    pub fn fault(&self, gpu: u32, reason: &str) -> Option<u32> {
        tracing::warn!(gpu, %reason, "GPU device fault");
        self.faults.as_ref().and_then(|f| f.fault(gpu, reason))
    }
}

thread_local! {
    static PLACED: RefCell<Option<Placement>> = const { RefCell::new(None) };
}

/// Run `f` on this thread with `placement` as the job's.
pub fn with<R>(placement: Option<Placement>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Placement>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let old = self.0.take();
            PLACED.with(|p| *p.borrow_mut() = old);
        }
    }
    let old = PLACED.with(|p| p.replace(placement));
    let _restore = Restore(old);
    f()
}

/// The placement of the job this thread runs, if the node placed it.
pub fn current() -> Option<Placement> {
    PLACED.with(|p| p.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_and_restored() {
        assert!(current().is_none());
        let on = |gpu| Placement {
            gpu: Some(gpu),
            ..Default::default()
        };
        with(Some(on(1)), || {
            assert_eq!(current().unwrap().gpu, Some(1));
            with(Some(on(2)), || assert_eq!(current().unwrap().gpu, Some(2)));
            assert_eq!(current().unwrap().gpu, Some(1));
            // Other threads do not see it.
            std::thread::spawn(|| assert!(current().is_none()))
                .join()
                .unwrap();
        });
        assert!(current().is_none());
    }
}
