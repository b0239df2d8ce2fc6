//! The replay side of evidence: after the detection pass has opened the alerts (and named
//! their files), a second pass over the same capture files writes each alert's packets, from
//! its first packet to the end of its window. Only replays that raised a recorded alert pay
//! for the second read.

use std::path::PathBuf;

use super::Recorder;
use crate::{
    packet::Outcome,
    source::pcap::{self, CaptureError},
};

/// Writes the packets of the recorder's alerts from `files` (read again, in order); returns
/// how many packets were read. The recorder is finished afterwards.
pub fn second_pass(rec: &mut Recorder, files: &[PathBuf]) -> Result<u64, CaptureError> {
    if !rec.is_recording() {
        rec.finish();
        return Ok(0);
    }
    rec.begin_second_pass();
    let mut read = 0u64;
    let mut next_end = u64::MAX;
    'files: for path in files {
        let (mut cap, link) = pcap::open_file(path)?;
        let linktype = cap.get_datalink().0 as u32;
        // To the end, or a record cut short (the detection pass warned about it).
        while let Ok(pkt) = cap.next_packet() {
            read += 1;
            let h = pkt.header;
            let ts = pcap::packet_time_ns(h);
            if rec.start_due(ts) {
                next_end = rec.next_end().unwrap_or(u64::MAX);
            }
            if ts > next_end {
                rec.expire(ts);
                next_end = rec.next_end().unwrap_or(u64::MAX);
            }
            if !rec.is_recording() {
                if rec.pending.is_empty() {
                    break 'files;
                }
                continue;
            }
            if let Outcome::Flow(p) = link.parse(pkt.data) {
                rec.packet(
                    ts,
                    h.len,
                    pkt.data,
                    linktype,
                    Some((&p.key.src_addr, &p.key.dst_addr)),
                    None,
                );
                // A recording whose budget is spent ends now, not at its window's end: the
                // rest of the file need not be read for it.
                if rec.any_done() {
                    rec.expire(ts);
                    next_end = rec.next_end().unwrap_or(u64::MAX);
                }
            }
        }
    }
    rec.finish();
    Ok(read)
}
