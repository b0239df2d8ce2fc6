//! The capabilities `sensor run` keeps. Started as root (or with more capabilities than it
//! needs), it lowers its bounding, permitted, effective and inheritable sets to what the live
//! sensor uses for its whole life, before any thread starts (capabilities are per thread;
//! every later thread, and every program it runs, inherits the reduced sets):
//!
//! - `CAP_BPF`, `CAP_NET_ADMIN`: attach and detach XDP (at start, from the API, and again when
//!   a watched interface comes back);
//! - `CAP_PERFMON`, `CAP_SYS_RESOURCE`: load the program, which happens at the first attach
//!   (possibly from the API, long after start) and on older kernels' memlock accounting;
//! - `CAP_NET_RAW`: libpcap capture where XDP cannot attach;
//! - `CAP_NET_BIND_SERVICE`: only when the API listens on a port below 1024.
//!
//! Everything else (`CAP_SYS_ADMIN`, `CAP_DAC_OVERRIDE`, `CAP_SYS_PTRACE`, ...) is gone. Map
//! updates (blocklist, watch list) and ring reads go through file descriptors the process
//! already holds and need no capability.

use caps::{CapSet, Capability, CapsHashSet};

#[derive(Debug, thiserror::Error)]
#[error("lowering the process's capabilities: {0}")]
pub struct PrivilegeError(String);

/// What the live sensor keeps; `bind_low` when the API port is below 1024.
pub fn needed(bind_low: bool) -> CapsHashSet {
    let mut s: CapsHashSet = [
        Capability::CAP_BPF,
        Capability::CAP_NET_ADMIN,
        Capability::CAP_PERFMON,
        Capability::CAP_SYS_RESOURCE,
        Capability::CAP_NET_RAW,
    ]
    .into_iter()
    .collect();
    if bind_low {
        s.insert(Capability::CAP_NET_BIND_SERVICE);
    }
    s
}

/// Lowers this thread's sets to `keep` (never raises: what it lacks stays lacking) and, where
/// it may (`CAP_SETPCAP`), the bounding set too. Call before starting threads. Returns what
/// was dropped from the permitted set.
pub fn keep_only(keep: &CapsHashSet) -> Result<CapsHashSet, PrivilegeError> {
    let err = |e: caps::errors::CapsError| PrivilegeError(e.to_string());
    let permitted = caps::read(None, CapSet::Permitted).map_err(err)?;
    let dropped: CapsHashSet = permitted.difference(keep).copied().collect();
    if permitted.contains(&Capability::CAP_SETPCAP) {
        // The bounding set first: dropping from it needs CAP_SETPCAP, itself dropped below.
        // Only what this kernel knows (an older one lacks the newest capabilities).
        for c in caps::runtime::thread_all_supported().difference(keep) {
            if caps::has_cap(None, CapSet::Bounding, *c).map_err(err)? {
                caps::drop(None, CapSet::Bounding, *c).map_err(err)?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    let kept: CapsHashSet = permitted.intersection(keep).copied().collect();
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(err)?;
    caps::set(None, CapSet::Effective, &kept).map_err(err)?;
    caps::set(None, CapSet::Permitted, &kept).map_err(err)?;
    Ok(dropped)
}
