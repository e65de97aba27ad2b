//! The envelope: a payload and the id of the connection it came from or goes to.

/// A payload with the id of its connection: what [`Mesh::send`](crate::Mesh::send) takes
/// and [`Mesh::recv`](crate::Mesh::recv) gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    id: usize,
    payload: Vec<u8>,
}

impl Envelope {
    /// An envelope for connection `id`.
    pub fn new(id: usize, payload: Vec<u8>) -> Self {
        Envelope { id, payload }
    }

    /// The connection's id.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Takes the payload out, leaving an empty one.
    pub fn take_payload(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.payload)
    }

    /// The id and the payload.
    pub fn into_parts(self) -> (usize, Vec<u8>) {
        (self.id, self.payload)
    }
}
