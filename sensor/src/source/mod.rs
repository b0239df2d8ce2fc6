//! Where packets come from: the XDP program's maps, libpcap on an interface, capture files.

pub mod live;
pub mod pcap;
pub mod replay;
pub mod xdp;
