//! The archive in a local directory (`archive.directory`), in the layout of the S3 bucket: an
//! object's key is its path under the directory, so the readers' globs (DuckDB, pyarrow) work
//! on either. For one machine without S3.
//!
//! An object is written to a temporary file beside its place (`.<name>.tmp-<pid>-<n>`), synced,
//! checked against the SHA-256 the caller expects, renamed into place and its directory synced:
//! a reader or a crash sees the old object or the whole new one, never part of one. Temporary
//! files left by a crash are removed at the next start. There is no metadata store: HEAD hashes
//! the file (what S3 keeps as metadata is computed here).
//!
//! It must never report an object as written before the file and its directory entry are on
//! disk.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::store::{ObjectInfo, S3Error};

/// Marks a temporary file (never a key the archive writes: its names do not start with '.').
const TMP: &str = ".tmp-";

static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

pub struct DirStore {
    root: PathBuf,
    prefix: String,
}

fn fs_err(op: &'static str, key: &str, e: impl std::fmt::Display) -> S3Error {
    S3Error {
        class: "fs_io",
        op,
        key: key.to_owned(),
        message: e.to_string(),
    }
}

/// SHA-256 (hex) and size of a file, read in bounded chunks.
async fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, super::format::hex(h.finish().as_ref())))
}

impl DirStore {
    pub fn new(root: &str, prefix: &str) -> DirStore {
        DirStore {
            root: PathBuf::from(root),
            prefix: prefix.to_owned(),
        }
    }

    pub fn location(&self) -> String {
        format!("file://{}/{}", self.root.display(), self.prefix)
    }

    pub fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    /// The file of a key; refuses a key that would leave the directory.
    fn path(&self, key: &str) -> Result<PathBuf, S3Error> {
        let rel = Path::new(key);
        if key.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(fs_err("path", key, "not a relative key inside the archive"));
        }
        Ok(self.root.join(rel))
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, S3Error> {
        let path = self.path(key)?;
        match hash_file(&path).await {
            Ok((size, sha)) => Ok(Some(ObjectInfo {
                size,
                sha256: Some(sha),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fs_err("head", key, e)),
        }
    }

    /// Writes an object to a temporary file (`fill` writes it and returns the SHA-256 of what
    /// it wrote), checks the hash, renames it in.
    async fn write_atomically(
        &self,
        key: &str,
        expect_sha: Option<&str>,
        fill: impl AsyncFnOnce(&mut tokio::fs::File) -> std::io::Result<String>,
    ) -> Result<(), S3Error> {
        let path = self.path(key)?;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(fs_err("put", key, "no directory or file name"));
        };
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| fs_err("create directory", key, e))?;
        let tmp = dir.join(format!(
            ".{}{TMP}{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            NEXT_TMP.fetch_add(1, Ordering::Relaxed)
        ));
        let r = async {
            let mut f = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| fs_err("create", key, e))?;
            let got = fill(&mut f).await.map_err(|e| fs_err("write", key, e))?;
            f.flush().await.map_err(|e| fs_err("write", key, e))?;
            f.sync_all().await.map_err(|e| fs_err("sync", key, e))?;
            drop(f);
            if let Some(want) = expect_sha
                && got != want
            {
                return Err(fs_err(
                    "check",
                    key,
                    format!("written bytes have SHA-256 {got}, expected {want}"),
                ));
            }
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(|e| fs_err("rename", key, e))?;
            // The rename is durable once the directory is.
            let d = tokio::fs::File::open(dir)
                .await
                .map_err(|e| fs_err("sync directory", key, e))?;
            d.sync_all()
                .await
                .map_err(|e| fs_err("sync directory", key, e))
        }
        .await;
        if r.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        r
    }

    pub async fn put_file(&self, key: &str, path: &Path, sha256: &str) -> Result<(), S3Error> {
        let mut src = tokio::fs::File::open(path)
            .await
            .map_err(|e| fs_err("read spool file", key, e))?;
        // Hashed on the way: the bytes written are the bytes checked, read once.
        self.write_atomically(key, Some(sha256), async |f| {
            let mut h = ring::digest::Context::new(&ring::digest::SHA256);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = src.read(&mut buf).await?;
                if n == 0 {
                    return Ok(super::format::hex(h.finish().as_ref()));
                }
                h.update(&buf[..n]);
                f.write_all(&buf[..n]).await?;
            }
        })
        .await
    }

    pub async fn put_bytes(&self, key: &str, body: &[u8]) -> Result<(), S3Error> {
        self.write_atomically(key, None, async |f| {
            f.write_all(body).await?;
            Ok(String::new())
        })
        .await
    }

    /// Copies `key` to `path` (replacing it); returns its size and SHA-256.
    pub async fn get_to_file(&self, key: &str, path: &Path) -> Result<(u64, String), S3Error> {
        let src = self.path(key)?;
        tokio::fs::copy(&src, path)
            .await
            .map_err(|e| fs_err("copy", key, e))?;
        hash_file(path)
            .await
            .map_err(|e| fs_err("read spool file", key, e))
    }

    pub async fn get_small(&self, key: &str, max: usize) -> Result<Option<Vec<u8>>, S3Error> {
        let path = self.path(key)?;
        let f = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fs_err("open", key, e)),
        };
        let mut v = Vec::new();
        f.take(max as u64 + 1)
            .read_to_end(&mut v)
            .await
            .map_err(|e| fs_err("read", key, e))?;
        if v.len() > max {
            return Err(fs_err("read", key, format!("larger than {max} bytes")));
        }
        Ok(Some(v))
    }

    /// Every file whose key starts with `prefix`, sorted; temporary files are not objects.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        let mut out = Vec::new();
        self.walk(|key, _| {
            if key.starts_with(prefix) && !is_tmp(key) {
                out.push(key.to_owned());
            }
        })
        .await?;
        out.sort();
        Ok(out)
    }

    /// Removes the temporary files a crash left under the prefix. Returns how many.
    pub async fn remove_stale_temporaries(&self) -> Result<usize, S3Error> {
        let mut stale = Vec::new();
        let prefix = self.prefix.clone();
        self.walk(|key, path| {
            if key.starts_with(&prefix) && is_tmp(key) {
                stale.push(path.to_path_buf());
            }
        })
        .await?;
        for p in &stale {
            tokio::fs::remove_file(p)
                .await
                .map_err(|e| fs_err("remove temporary", &p.display().to_string(), e))?;
        }
        Ok(stale.len())
    }

    pub async fn ensure_root(&self) -> Result<(), S3Error> {
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(|e| fs_err("create directory", &self.root.display().to_string(), e))
    }

    /// Calls `f(key, path)` for every file under the directory (none if it does not exist).
    async fn walk(&self, mut f: impl FnMut(&str, &Path)) -> Result<(), S3Error> {
        let mut todo = vec![self.root.clone()];
        while let Some(dir) = todo.pop() {
            let mut rd = match tokio::fs::read_dir(&dir).await {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(fs_err("list", &dir.display().to_string(), e)),
            };
            while let Some(entry) = rd
                .next_entry()
                .await
                .map_err(|e| fs_err("list", &dir.display().to_string(), e))?
            {
                let path = entry.path();
                let kind = entry
                    .file_type()
                    .await
                    .map_err(|e| fs_err("list", &path.display().to_string(), e))?;
                if kind.is_dir() {
                    todo.push(path);
                } else if kind.is_file()
                    && let Ok(rel) = path.strip_prefix(&self.root)
                {
                    let key = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/");
                    f(&key, &path);
                }
            }
        }
        Ok(())
    }
}

fn is_tmp(key: &str) -> bool {
    key.rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with('.') && name.contains(TMP))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn objects_are_written_whole_listed_hashed_and_kept_inside_the_directory() {
        let root = std::env::temp_dir().join(format!("kalshi-dirstore-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let d = DirStore::new(&root.display().to_string(), "v1/");
        d.ensure_root().await.unwrap();
        assert_eq!(d.head("v1/a/b.json").await.unwrap().map(|i| i.size), None);
        assert_eq!(d.get_small("v1/a/b.json", 10).await.unwrap(), None);
        d.put_bytes("v1/a/b.json", b"{\"x\":1}").await.unwrap();
        let info = d.head("v1/a/b.json").await.unwrap().unwrap();
        assert_eq!(info.size, 7);
        assert_eq!(
            info.sha256.as_deref(),
            Some(kalshi_shared::identity::sha256_hex(b"{\"x\":1}").as_str())
        );
        assert_eq!(
            d.get_small("v1/a/b.json", 7).await.unwrap().unwrap(),
            b"{\"x\":1}"
        );
        assert!(d.get_small("v1/a/b.json", 6).await.is_err(), "bounded read");

        // A file whose bytes are not what the caller hashed is refused and leaves nothing.
        let spool = root.join("spool.bin");
        std::fs::write(&spool, b"parquet bytes").unwrap();
        let wrong = d.put_file("v1/t/x.parquet", &spool, "00").await;
        assert!(wrong.is_err());
        assert_eq!(
            d.head("v1/t/x.parquet").await.unwrap().map(|i| i.size),
            None
        );
        let sha = kalshi_shared::identity::sha256_hex(b"parquet bytes");
        d.put_file("v1/t/x.parquet", &spool, &sha).await.unwrap();
        let out = root.join("back.bin");
        assert_eq!(
            d.get_to_file("v1/t/x.parquet", &out).await.unwrap(),
            (13, sha.clone())
        );

        // A crash's temporary file is no object and is removed at the next start.
        std::fs::write(root.join("v1/t/.y.parquet.tmp-1-1"), b"half").unwrap();
        std::fs::write(root.join("outside.txt"), b"not under the prefix").unwrap();
        assert_eq!(
            d.list("v1/").await.unwrap(),
            vec!["v1/a/b.json".to_owned(), "v1/t/x.parquet".to_owned()]
        );
        assert_eq!(d.remove_stale_temporaries().await.unwrap(), 1);
        assert!(!root.join("v1/t/.y.parquet.tmp-1-1").exists());

        for bad in ["../x", "/etc/passwd", "v1/../../x", ""] {
            assert!(d.put_bytes(bad, b"x").await.is_err(), "{bad}");
            assert!(d.head(bad).await.is_err(), "{bad}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
