//! Attaching the XDP program to an interface, and asking the kernel what is attached where.
//!
//! Links are `bpf_link`s: they die with the process, so a killed sensor leaves nothing
//! attached, and dropping one detaches it.

use std::process::Command;

use aya::programs::{XdpMode, links::FdLink};

use super::{KernelError, SensorProgram};

/// How XDP is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttachMode {
    /// Driver (native) mode, falling back to generic (skb) mode with a log line.
    Auto,
    Driver,
    Skb,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("interface {0:?} does not exist (see `ip link`)")]
    NoInterface(String),
    #[error(
        "interface {0} already has an XDP program attached; the sensor does not replace it \
         (detach it with `ip link set dev {0} xdp off`, or pass --force)"
    )]
    Busy(String),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(
        "attaching XDP to {iface} ({mode}): {source}; where XDP cannot attach, the pcap capture \
         mode (`sensor run --capture pcap --iface {iface}`) watches it with libpcap instead"
    )]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
}

/// An attached program: dropping it detaches.
pub struct XdpLink {
    pub mode: &'static str,
    _link: FdLink,
}

/// Whether `name` is an interface of this thread's network namespace (asks the kernel: /sys
/// may show another namespace's).
pub fn iface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Whether any XDP program is attached to `iface` (from `ip -d link`).
pub fn xdp_attached(iface: &str) -> bool {
    Command::new("ip")
        .args(["-d", "link", "show", "dev", iface])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("prog/xdp"))
}

/// Interfaces (in this network namespace) that have the sensor's XDP program attached, with
/// the mode and program id, as `ip -d -j link` reports them.
pub fn attached_interfaces() -> Vec<(String, &'static str, u64)> {
    let Ok(out) = Command::new("ip")
        .args(["-d", "-j", "link", "show"])
        .output()
    else {
        return Vec::new();
    };
    let links: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    links
        .iter()
        .filter(|l| l["xdp"]["prog"]["name"] == sensor_common::XDP_PROGRAM)
        .map(|l| {
            let mode = match l["xdp"]["mode"].as_u64() {
                Some(1) => "driver",
                Some(2) => "skb",
                Some(3) => "offload",
                _ => "multiple",
            };
            (
                l["ifname"].as_str().unwrap_or_default().to_owned(),
                mode,
                l["xdp"]["prog"]["id"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Attaches `prog` to `iface`: checks that the interface exists and that no other XDP program
/// is there (unless `force`), then tries driver mode and, for `Auto`, generic mode.
pub fn attach(
    prog: &mut SensorProgram,
    iface: &str,
    mode: XdpAttachMode,
    force: bool,
) -> Result<XdpLink, AttachError> {
    if !iface_exists(iface) {
        return Err(AttachError::NoInterface(iface.to_owned()));
    }
    if xdp_attached(iface) && !force {
        return Err(AttachError::Busy(iface.to_owned()));
    }
    let tries: &[(XdpMode, &'static str)] = match mode {
        XdpAttachMode::Auto => &[(XdpMode::Driver, "driver"), (XdpMode::Skb, "skb")],
        XdpAttachMode::Driver => &[(XdpMode::Driver, "driver")],
        XdpAttachMode::Skb => &[(XdpMode::Skb, "skb")],
    };
    let mut last = None;
    for (i, (xdp_mode, name)) in tries.iter().enumerate() {
        let xdp = prog.xdp()?;
        let fail = |source| AttachError::Attach {
            iface: iface.to_owned(),
            mode: name,
            source,
        };
        match xdp.attach(iface, *xdp_mode) {
            Ok(id) => {
                let link = xdp.take_link(id).map_err(fail)?;
                let link: FdLink =
                    link.try_into()
                        .map_err(|e: aya::programs::links::LinkError| {
                            fail(aya::programs::ProgramError::IOError(std::io::Error::other(
                                e.to_string(),
                            )))
                        })?;
                if i > 0 {
                    tracing::warn!(
                        iface,
                        "driver-mode XDP unavailable; attached in generic (skb) mode"
                    );
                }
                tracing::info!(iface, mode = name, "XDP attached");
                return Ok(XdpLink {
                    mode: name,
                    _link: link,
                });
            }
            Err(source) => last = Some(fail(source)),
        }
    }
    Err(last.unwrap_or_else(|| AttachError::NoInterface(iface.to_owned())))
}
