//! The image: where the file system starts in the AppImage file, what names its contents, and
//! how it is unpacked into a folder.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use backhand::{FilesystemReader, InnerNode};
use sha2::{Digest, Sha256};

/// The AppImage's mark (type 2): at byte 8 of the program, in the ELF header's padding.
pub const MAGIC: [u8; 3] = [0x41, 0x49, 0x02];
/// A SquashFS file system starts with these bytes.
const SQUASHFS: [u8; 4] = *b"hsqs";

/// Where the file system starts: the end of this program, an ELF file, as its section header
/// table (the last thing a linker writes) says. Checks the AppImage mark and the file system's
/// own mark there.
pub fn payload_offset(file: &mut File) -> io::Result<u64> {
    let mut header = [0u8; 64];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut header)?;
    let offset = elf_end(&header)?;
    if header[8..11] != MAGIC {
        return Err(bad(
            "it is not an AppImage (no AppImage mark in its header)",
        ));
    }
    let mut mark = [0u8; 4];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut mark)
        .map_err(|_| bad("it holds no file system after the program (cut short?)"))?;
    if mark != SQUASHFS {
        return Err(bad("no file system where the program ends (damaged?)"));
    }
    Ok(offset)
}

/// The end of a 64-bit little-endian ELF file from its header: where its section header table
/// ends.
pub fn elf_end(header: &[u8; 64]) -> io::Result<u64> {
    if header[..4] != *b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return Err(bad("it is not a 64-bit ELF program"));
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let u16_at = |i: usize| u16::from_le_bytes([header[i], header[i + 1]]);
    let (shoff, shentsize, shnum) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c));
    shoff
        .checked_add(u64::from(shentsize) * u64::from(shnum))
        .ok_or_else(|| bad("its ELF header is damaged"))
}

/// A name for this image's contents: the first 16 hex digits of the SHA-256 of the file system
/// (every byte of it: two builds never share a name, one build always has the same).
pub fn key(file: &mut File, offset: u64) -> io::Result<String> {
    file.seek(SeekFrom::Start(offset))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hash
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Unpacks the file system at `offset` of `file` into the folder `to`, which must not exist
/// yet. Every path stays inside `to`: only plain names, and a file or link goes only into a
/// folder this unpacking made (never through a link).
pub fn unpack(file: File, offset: u64, to: &Path) -> io::Result<()> {
    let image = FilesystemReader::from_reader_with_offset(BufReader::new(file), offset)
        .map_err(|e| bad(&format!("its file system can't be read ({e})")))?;
    std::fs::create_dir(to)?;
    let mut made: HashSet<PathBuf> = HashSet::new();
    made.insert(PathBuf::new());
    for node in image.files() {
        let Some(rel) = inside(&node.fullpath) else {
            return Err(bad(&format!(
                "it names a path outside itself: {}",
                node.fullpath.display()
            )));
        };
        if rel.as_os_str().is_empty() {
            continue; // the root
        }
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if !made.contains(&parent) {
            return Err(bad(&format!(
                "{} is not in a folder of its own",
                rel.display()
            )));
        }
        let dest = to.join(&rel);
        let mode = u32::from(node.header.permissions) & 0o7777;
        match &node.inner {
            InnerNode::Dir(_) => {
                std::fs::create_dir(&dest)?;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode | 0o700))?;
                made.insert(rel);
            }
            InnerNode::File(f) => {
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode & 0o777)
                    .open(&dest)?;
                let mut r = image.file(f).reader();
                io::copy(&mut r, &mut out)?;
                out.sync_all()?;
            }
            InnerNode::Symlink(s) => symlink(&s.link, &dest)?,
            // Nothing an app needs: devices, pipes and sockets are left out.
            _ => {}
        }
    }
    Ok(())
}

/// `path` (absolute in the image) as a path relative to its root, if it has only plain names.
fn inside(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => out.push(name),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use backhand::compression::Compressor;
    use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};
    use std::io::Write;

    /// A small image: a program, a folder with a file, a link.
    fn image(with: impl FnOnce(&mut FilesystemWriter)) -> Vec<u8> {
        let mut w = FilesystemWriter::default();
        w.set_compressor(FilesystemCompressor::new(Compressor::Zstd, None).unwrap());
        let h = |mode| NodeHeader::new(mode, 0, 0, 0);
        w.push_file(&b"#!/bin/sh\necho hi\n"[..], "AppRun", h(0o755))
            .unwrap();
        w.push_dir("usr", h(0o755)).unwrap();
        w.push_dir("usr/bin", h(0o755)).unwrap();
        w.push_file(
            std::io::Cursor::new(vec![7u8; 300_000]),
            "usr/bin/app",
            h(0o755),
        )
        .unwrap();
        w.push_symlink("usr/bin/app", "app", h(0o777)).unwrap();
        with(&mut w);
        let mut out = io::Cursor::new(Vec::new());
        w.write(&mut out).unwrap();
        out.into_inner()
    }

    /// `prefix` then the image, in a file.
    fn appimage(prefix: &[u8], image: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(prefix).unwrap();
        f.write_all(image).unwrap();
        f
    }

    /// An ELF header whose section table ends at `end`, with the AppImage mark.
    fn elf_header(end: u64) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[8..11].copy_from_slice(&MAGIC);
        let (shentsize, shnum) = (64u16, 2u16);
        let shoff = end - u64::from(shentsize) * u64::from(shnum);
        h[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        h[0x3a..0x3c].copy_from_slice(&shentsize.to_le_bytes());
        h[0x3c..0x3e].copy_from_slice(&shnum.to_le_bytes());
        h.resize(end as usize, 0);
        h
    }

    #[test]
    fn the_file_system_is_found_where_the_program_ends_and_unpacked_whole() {
        let f = appimage(&elf_header(4096), &image(|_| {}));
        let mut file = File::open(f.path()).unwrap();
        let offset = payload_offset(&mut file).unwrap();
        assert_eq!(offset, 4096);
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("x");
        unpack(file, offset, &to).unwrap();
        assert_eq!(
            std::fs::read(to.join("AppRun")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(
            std::fs::read(to.join("usr/bin/app")).unwrap(),
            vec![7u8; 300_000]
        );
        let mode = std::fs::metadata(to.join("usr/bin/app"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_link(to.join("app")).unwrap(),
            Path::new("usr/bin/app")
        );
    }

    #[test]
    fn a_file_that_is_not_an_appimage_is_refused_in_words() {
        let mut plain = elf_header(4096);
        plain[8..11].copy_from_slice(&[0, 0, 0]);
        let f = appimage(&plain, &image(|_| {}));
        let e = payload_offset(&mut File::open(f.path()).unwrap()).unwrap_err();
        assert!(e.to_string().contains("not an AppImage"), "{e}");
        let f = appimage(&elf_header(4096), b"not a file system");
        let e = payload_offset(&mut File::open(f.path()).unwrap()).unwrap_err();
        assert!(e.to_string().contains("no file system"), "{e}");
        let f = appimage(b"#!/bin/sh\n", &[]);
        assert!(payload_offset(&mut File::open(f.path()).unwrap()).is_err());
    }

    #[test]
    fn a_link_in_the_image_stays_a_link_and_nothing_lands_outside() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_path_buf();
        let img = image(|w| {
            let h = NodeHeader::new(0o777, 0, 0, 0);
            w.push_symlink(&target, "elsewhere", h).unwrap();
        });
        let f = appimage(&elf_header(4096), &img);
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("x");
        unpack(File::open(f.path()).unwrap(), 4096, &to).unwrap();
        assert_eq!(std::fs::read_link(to.join("elsewhere")).unwrap(), target);
        assert!(std::fs::read_dir(&target).unwrap().next().is_none());
        // Only plain names: a path that climbs out is refused.
        assert_eq!(inside(Path::new("/a/../b")), None);
        assert_eq!(inside(Path::new("/a/b")), Some(PathBuf::from("a/b")));
    }

    #[test]
    fn the_key_names_the_contents() {
        let a = appimage(&elf_header(4096), &image(|_| {}));
        let b = appimage(
            &elf_header(4096),
            &image(|w| {
                w.push_file(&b"more"[..], "more", NodeHeader::new(0o644, 0, 0, 0))
                    .unwrap();
            }),
        );
        let ka = key(&mut File::open(a.path()).unwrap(), 4096).unwrap();
        assert_eq!(ka.len(), 16);
        assert_eq!(ka, key(&mut File::open(a.path()).unwrap(), 4096).unwrap());
        assert_ne!(ka, key(&mut File::open(b.path()).unwrap(), 4096).unwrap());
    }
}
