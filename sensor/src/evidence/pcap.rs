//! A pcap file writer for evidence files.
//!
//! Hand-written (the format is a 24-byte header and a 16-byte header per record) rather than
//! libpcap's savefile: the file must be created mode 0600 before any byte reaches it, and the
//! recorder needs the exact size on disk of every file for its per-alert and total caps.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
};

/// Nanosecond-resolution pcap magic (tcpdump, tshark and libpcap read it).
const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// Size of the file header.
pub const FILE_HEADER: u64 = 24;
/// Size of each record's header.
pub const RECORD_HEADER: u64 = 16;

/// An open pcap file.
pub struct PcapWriter {
    out: BufWriter<File>,
    bytes: u64,
}

impl PcapWriter {
    /// Creates `path` (mode 0600; an existing file is an error, so nothing is overwritten)
    /// with a header for `linktype` and `snaplen`.
    pub fn create(path: &Path, linktype: u32, snaplen: u32) -> io::Result<Self> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        let mut out = BufWriter::with_capacity(64 * 1024, f);
        let mut h = [0u8; FILE_HEADER as usize];
        h[0..4].copy_from_slice(&MAGIC_NS.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay 0.
        h[16..20].copy_from_slice(&snaplen.to_le_bytes());
        h[20..24].copy_from_slice(&linktype.to_le_bytes());
        out.write_all(&h)?;
        Ok(Self {
            out,
            bytes: FILE_HEADER,
        })
    }

    /// Appends one packet: `data` is its first bytes, `wire_len` its length on the wire.
    pub fn write(&mut self, ts_ns: u64, wire_len: u32, data: &[u8]) -> io::Result<()> {
        let mut h = [0u8; RECORD_HEADER as usize];
        h[0..4].copy_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&((ts_ns % 1_000_000_000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&wire_len.max(data.len() as u32).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(data)?;
        self.bytes += RECORD_HEADER + data.len() as u64;
        Ok(())
    }

    /// Bytes in the file (written or buffered).
    pub fn len(&self) -> u64 {
        self.bytes
    }

    /// True before the first packet.
    pub fn is_empty(&self) -> bool {
        self.bytes == FILE_HEADER
    }

    /// Pushes buffered records to the file, so a download in the middle of an alert is whole.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and closes.
    pub fn finish(mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_file_libpcap_reads_back_with_nanosecond_times() {
        let dir = std::env::temp_dir().join(format!("sensor-pcapw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("a.pcap");
        let _ = std::fs::remove_file(&p);
        let mut w = PcapWriter::create(&p, 1, 256).expect("create");
        let frame: Vec<u8> = (0..60u8).collect();
        w.write(1_700_000_000_123_456_789, 1514, &frame)
            .expect("write");
        w.write(1_700_000_001_000_000_001, 60, &frame)
            .expect("write");
        assert_eq!(w.len(), FILE_HEADER + 2 * (RECORD_HEADER + 60));
        w.finish().expect("finish");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "evidence files are private");
        assert!(
            PcapWriter::create(&p, 1, 256).is_err(),
            "an existing file is never overwritten"
        );
        let mut cap = pcap::Capture::from_file_with_precision(&p, pcap::Precision::Nano)
            .expect("libpcap opens it");
        assert_eq!(cap.get_datalink(), pcap::Linktype::ETHERNET);
        let a = cap.next_packet().expect("first");
        assert_eq!(
            (
                a.header.ts.tv_sec,
                a.header.ts.tv_usec,
                a.header.caplen,
                a.header.len
            ),
            (1_700_000_000, 123_456_789, 60, 1514)
        );
        assert_eq!(a.data, &frame[..]);
        let b = cap.next_packet().expect("second");
        assert_eq!((b.header.ts.tv_usec, b.header.len), (1, 60));
        assert!(matches!(cap.next_packet(), Err(pcap::Error::NoMorePackets)));
        std::fs::remove_dir_all(&dir).ok();
    }
}
