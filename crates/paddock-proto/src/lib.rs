//! Generated gRPC code for Paddock: the public API (`v1`) and the internal
//! daemon-to-guest protocol (`guest`), how to dial them over a unix socket
//! (`dial`), and the agent toolset's input types and schemas (`toolset`).

pub mod dial;
pub mod toolset;

/// The largest gRPC message either side sends or accepts: file contents and
/// command output travel in single messages.
pub const MAX_MESSAGE: usize = 256 << 20;

/// HTTP/2 frame size the servers accept (the protocol's default is 16 KiB):
/// file transfers move 1 MiB messages, and fewer, larger frames cost less CPU.
pub const MAX_FRAME: u32 = 1 << 20;

pub mod v1 {
    tonic::include_proto!("paddock.v1");

    /// Encoded descriptors of the public API, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("paddock_v1_descriptor");
}

pub mod guest {
    include!(concat!(env!("OUT_DIR"), "/guest/paddock.guest.v1.rs"));
}

/// Set by the daemon in a sandbox's environment, read (and removed) by the
/// guest at start: the default working directory of tool processes (an
/// imported image's `WorkingDir`).
pub const GUEST_WORKDIR_ENV: &str = "PADDOCK_GUEST_WORKDIR";
/// Likewise: the default user of tool processes (an imported image's `User`:
/// `name`, `uid`, `uid:gid` or `name:group`).
pub const GUEST_USER_ENV: &str = "PADDOCK_GUEST_USER";
