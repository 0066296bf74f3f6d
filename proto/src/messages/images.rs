//! Images streamed operator → master → agents (`bramble images import|load`)

use super::*;

/// What an uploaded image file is and how to check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSpec {
    pub format: ImageFormat,
    /// The image's name: required for a root filesystem, else the archive's own tag.
    pub name: Option<String>,
    /// A root filesystem's architecture (OCI name); an archive says its own.
    pub architecture: Option<String>,
    /// The file's exact size in bytes.
    pub size: u64,
    /// The file's SHA-256, lowercase hex: checked where it arrives.
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageFormat {
    /// A plain root filesystem tarball (`podman import`).
    Rootfs,
    /// An OCI or docker-archive tarball (`docker save`).
    Archive,
}

/// An operator's upload, one call per piece; every piece is answered before the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ImageUpload {
    /// Starts an upload on this connection (one at a time); `agent`: only to that agent.
    Begin {
        spec: ImageSpec,
        agent: Option<AgentId>,
    },
    Chunk {
        offset: u64,
        data: Vec<u8>,
    },
    /// All bytes sent: check them, stream them to the agents, answer `ImagePushed`.
    End,
}

/// A piece of an image the master streams to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ImagePiece {
    Begin {
        transfer: u64,
        spec: ImageSpec,
    },
    Chunk {
        transfer: u64,
        offset: u64,
        data: Vec<u8>,
    },
    /// All bytes sent: check the digest and install the image.
    End {
        transfer: u64,
    },
    /// The master gave up on this transfer: drop what arrived.
    Abort {
        transfer: u64,
    },
}

/// What an agent answers to an image piece.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ImageAck {
    /// Bytes received so far.
    Received { offset: u64 },
    /// The image is installed.
    Installed(ImageSummary),
}

/// An image in an agent's store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSummary {
    pub name: String,
    pub architecture: String,
    pub size_bytes: u64,
}

/// How an upload fared on one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePushResult {
    pub agent_id: AgentId,
    pub hostname: String,
    pub result: Result<ImageSummary, String>,
}
