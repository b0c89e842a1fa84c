//! CAR v1 files: the container `getRepo` answers with.
//!
//! The reader streams: it holds one block at a time, hashes every block against
//! its CID before returning it, caps block sizes, and accepts an empty root list
//! (as `getBlocks` sends). Truncation anywhere is an error, never a short read.

use std::io::{self, Read, Write};

use cid::Cid;
use serde::{Deserialize, Serialize};

use super::{verify_block, BlockError};

/// The largest block accepted. Records are capped at 1 MiB by PDSes; MST nodes
/// and commits are far smaller.
pub const MAX_BLOCK_BYTES: usize = 2 * 1024 * 1024;
const MAX_HEADER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CarError {
    #[error("the CAR file ended in the middle of a block: the download was cut short")]
    Truncated,
    #[error("the CAR header is invalid: {0}")]
    BadHeader(String),
    #[error("a CAR section of {0} bytes exceeds the {MAX_BLOCK_BYTES}-byte block limit")]
    BlockTooLarge(usize),
    #[error("a CAR section has an invalid CID: {0}")]
    BadCid(String),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("reading the CAR failed: {0}")]
    Io(#[from] io::Error),
}

#[derive(Deserialize, Serialize)]
struct Header {
    roots: Vec<Cid>,
    version: u64,
}

/// Reads the varint that opens a section; `Ok(None)` at a clean end of input.
fn read_varint(r: &mut impl Read, allow_eof: bool) -> Result<Option<u64>, CarError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let mut byte = [0u8; 1];
        match r.read(&mut byte) {
            Ok(0) if i == 0 && allow_eof => return Ok(None),
            Ok(0) => return Err(CarError::Truncated),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        value |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err(CarError::BadHeader("varint too long".into()))
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), CarError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            CarError::Truncated
        } else {
            CarError::Io(e)
        }
    })
}

/// A streaming CAR reader over any `Read` (wrap files and sockets in a `BufReader`).
pub struct CarReader<R> {
    inner: R,
    roots: Vec<Cid>,
    section: Vec<u8>,
}

impl<R: Read> CarReader<R> {
    pub fn new(mut inner: R) -> Result<Self, CarError> {
        let len = read_varint(&mut inner, false)?.ok_or(CarError::Truncated)? as usize;
        if len == 0 || len > MAX_HEADER_BYTES {
            return Err(CarError::BadHeader(format!("header length {len}")));
        }
        let mut buf = vec![0u8; len];
        read_exact(&mut inner, &mut buf)?;
        let header: Header = serde_ipld_dagcbor::from_slice(&buf)
            .map_err(|e| CarError::BadHeader(super::cbor_words(&e)))?;
        if header.version != 1 {
            return Err(CarError::BadHeader(format!(
                "version {} (only CAR v1 is supported)",
                header.version
            )));
        }
        Ok(Self {
            inner,
            roots: header.roots,
            section: Vec::new(),
        })
    }

    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// The next block, hashed and checked against its CID; `None` at the end.
    /// The returned slice is valid until the next call.
    pub fn next_block(&mut self) -> Result<Option<(Cid, &[u8])>, CarError> {
        let Some(len) = read_varint(&mut self.inner, true)? else {
            return Ok(None);
        };
        let len = len as usize;
        if len > MAX_BLOCK_BYTES + 128 {
            return Err(CarError::BlockTooLarge(len));
        }
        self.section.resize(len, 0);
        read_exact(&mut self.inner, &mut self.section)?;
        let mut cursor = io::Cursor::new(&self.section[..]);
        let cid = Cid::read_bytes(&mut cursor).map_err(|e| CarError::BadCid(e.to_string()))?;
        let start = cursor.position() as usize;
        let data = &self.section[start..];
        verify_block(&cid, data)?;
        Ok(Some((cid, data)))
    }
}

/// Writes a CAR v1 file block by block.
pub struct CarWriter<W: Write> {
    inner: W,
}

impl<W: Write> CarWriter<W> {
    pub fn new(mut inner: W, roots: Vec<Cid>) -> io::Result<Self> {
        let header = serde_ipld_dagcbor::to_vec(&Header { roots, version: 1 })
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        write_varint(&mut inner, header.len() as u64)?;
        inner.write_all(&header)?;
        Ok(Self { inner })
    }

    pub fn write_block(&mut self, cid: &Cid, data: &[u8]) -> io::Result<()> {
        let cid_bytes = cid.to_bytes();
        write_varint(&mut self.inner, (cid_bytes.len() + data.len()) as u64)?;
        self.inner.write_all(&cid_bytes)?;
        self.inner.write_all(data)
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

fn write_varint(w: &mut impl Write, mut value: u64) -> io::Result<()> {
    let mut buf = [0u8; 10];
    let mut n = 0;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            buf[n] = byte;
            n += 1;
            break;
        }
        buf[n] = byte | 0x80;
        n += 1;
    }
    w.write_all(&buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::cid_for_cbor;

    fn sample() -> (Vec<u8>, Vec<(Cid, Vec<u8>)>) {
        let blocks: Vec<(Cid, Vec<u8>)> = (0..3u8)
            .map(|i| {
                let data = serde_ipld_dagcbor::to_vec(&vec![i; 5]).unwrap();
                (cid_for_cbor(&data), data)
            })
            .collect();
        let mut w = CarWriter::new(Vec::new(), vec![blocks[0].0]).unwrap();
        for (cid, data) in &blocks {
            w.write_block(cid, data).unwrap();
        }
        (w.finish().unwrap(), blocks)
    }

    #[test]
    fn round_trip() {
        let (bytes, blocks) = sample();
        let mut r = CarReader::new(&bytes[..]).unwrap();
        assert_eq!(r.roots(), &[blocks[0].0]);
        let mut seen = Vec::new();
        while let Some((cid, data)) = r.next_block().unwrap() {
            seen.push((cid, data.to_vec()));
        }
        assert_eq!(seen, blocks);
    }

    #[test]
    fn empty_roots_are_accepted() {
        let w = CarWriter::new(Vec::new(), vec![]).unwrap();
        let bytes = w.finish().unwrap();
        let mut r = CarReader::new(&bytes[..]).unwrap();
        assert!(r.roots().is_empty());
        assert!(r.next_block().unwrap().is_none());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (bytes, _) = sample();
        for cut in 1..bytes.len() {
            let result = CarReader::new(&bytes[..cut]).and_then(|mut r| {
                while r.next_block()?.is_some() {}
                Ok(())
            });
            // A cut exactly at a section boundary is a shorter, valid CAR.
            if let Err(e) = result {
                assert!(
                    matches!(e, CarError::Truncated | CarError::BadHeader(_)),
                    "cut {cut}: {e}"
                );
            }
        }
    }

    #[test]
    fn tampered_block_is_refused() {
        let (mut bytes, _) = sample();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let mut r = CarReader::new(&bytes[..]).unwrap();
        let err = loop {
            match r.next_block() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("tampering not detected"),
                Err(e) => break e,
            }
        };
        assert!(matches!(
            err,
            CarError::Block(BlockError::HashMismatch { .. })
        ));
    }
}
