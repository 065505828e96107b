//! MQTT 3.1.1 and 5.0 as pure code: packet types, the wire codec and topic rules.
//! Nothing here does IO or keeps time.

pub mod codec;
pub mod packet;
pub mod topic;
