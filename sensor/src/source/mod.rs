//! Where packets come from: the XDP program's maps, libpcap on an interface, capture files.

pub mod attached;
pub mod pcap;
