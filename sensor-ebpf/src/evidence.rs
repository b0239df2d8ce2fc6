//! Copies of watched packets for the alerts' pcap files, through a ring buffer with a budget
//! per watch entry (a full ring is counted, never waited on).

use aya_ebpf::programs::XdpContext;
use sensor_common::{EVIDENCE_SNAPLEN, EvidenceRecord, GlobalCounters, family, watch};

use crate::{
    maps::{EVIDENCE, WATCH, add64},
    parse::Packet,
};

/// Copies the first bytes of a packet to the evidence ring when its source (or destination)
/// is watched, within the watch entry's time and budget. The copy happens whatever the
/// mitigation verdict: evidence of a blocked flood is evidence too.
#[inline(never)]
pub(crate) fn evidence(ctx: &XdpContext, pkt: &Packet, len: u64, now: u64, c: &mut GlobalCounters) {
    let fam = pkt.family();
    if fam != family::IPV4 && fam != family::IPV6 {
        return;
    }
    // SAFETY: two u64 words are 16 plain bytes.
    let src: [u8; 16] =
        unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([pkt.words[0], pkt.words[1]]) };
    let mut hit = WATCH
        .get_ptr_mut(&src)
        // SAFETY: a map value the kernel keeps alive for this run.
        .filter(|w| unsafe { (**w).flags } & watch::AS_SRC != 0);
    if hit.is_none() {
        // SAFETY: as above.
        let dst: [u8; 16] =
            unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([pkt.words[2], pkt.words[3]]) };
        hit = WATCH
            .get_ptr_mut(&dst)
            // SAFETY: a map value the kernel keeps alive for this run.
            .filter(|w| unsafe { (**w).flags } & watch::AS_DST != 0);
    }
    let Some(w) = hit else { return };
    // SAFETY: a map value the kernel keeps alive for this run; counters are atomic adds, the
    // budget fields are only read.
    let w = unsafe { &mut *w };
    if now >= w.expires_ns {
        return;
    }
    let snap = if w.snaplen as usize > EVIDENCE_SNAPLEN {
        EVIDENCE_SNAPLEN as u64
    } else {
        u64::from(w.snaplen)
    };
    let cap = if len < snap { len } else { snap };
    if cap == 0 {
        return;
    }
    if w.packets >= w.max_packets || w.bytes + cap > w.max_bytes {
        add64(&raw mut w.skipped, 1);
        return;
    }
    let Some(mut rec) = EVIDENCE.reserve::<EvidenceRecord>(0) else {
        add64(&raw mut w.lost, 1);
        c.evidence_lost += 1;
        return;
    };
    let r = rec.as_mut_ptr();
    // SAFETY: `r` is the reserved record, ours until submitted; `cap` is within 1..=256, the
    // size of `data`, and within the packet (`cap <= len`).
    let copied = unsafe {
        (*r).alert_id = w.alert_id;
        (*r).ts_ns = now;
        (*r).wire_len = len as u32;
        (*r).cap_len = cap as u32;
        let n = (cap as u32) & (EVIDENCE_SNAPLEN as u32 * 2 - 1);
        n != 0
            && n as usize <= EVIDENCE_SNAPLEN
            && aya_ebpf::helpers::generated::bpf_xdp_load_bytes(
                ctx.ctx,
                0,
                (&raw mut (*r).data).cast(),
                n,
            ) == 0
    };
    if copied {
        rec.submit(0);
        add64(&raw mut w.packets, 1);
        add64(&raw mut w.bytes, cap);
        c.evidence_packets += 1;
    } else {
        rec.discard(0);
        add64(&raw mut w.lost, 1);
        c.evidence_lost += 1;
    }
}
