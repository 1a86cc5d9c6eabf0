//! The build context: the pushed tree as a tar streamed to the engine, `.dockerignore`
//! honoured with Docker's semantics, `.secrets` never included.
//!
//! The tar is written on a blocking thread into a small bounded channel, so a context of any
//! size costs a few chunks of memory, and the engine's reading pace throttles the disk reads.

use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use nix::fcntl::AtFlags;
use nix::sys::stat::{Mode, SFlag, fstatat};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use globset::{GlobBuilder, GlobMatcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The directory name operators keep secret files in; never sent, whatever `.dockerignore`
/// says.
const SECRETS_DIR: &str = ".secrets";

/// Bytes per chunk handed to the engine connection.
const CHUNK_SIZE: usize = 64 * 1024;

/// Chunks written ahead of the engine's reading: enough to keep the socket busy while the next
/// file is opened, few enough that memory stays flat.
const CHUNKS_IN_FLIGHT: usize = 4;

/// The build context could not be read or sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ContextError {
    #[error("invalid pattern `{pattern}` on line {line} of `.dockerignore`: {reason}")]
    Pattern {
        line: usize,
        pattern: String,
        reason: String,
    },
    #[error("failed to read `{}` for the build context: {error}", .path.display())]
    Io { path: PathBuf, error: io::Error },
    /// The engine stopped reading (it refused the build, or the request was dropped); its own
    /// error says why.
    #[error("the Docker engine stopped reading the build context")]
    Aborted,
}

/// What was sent, for messages and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct ContextStats {
    /// Regular files in the tar.
    pub(crate) files: u64,
    /// Bytes of tar written, headers and padding included.
    pub(crate) bytes: u64,
}

/// `.dockerignore` as the docker CLI reads it (moby/patternmatcher): paths relative to the
/// context root, Go `filepath.Match` per segment plus `**`, `!` exceptions, the last matching
/// pattern wins, and a pattern matching a directory covers everything below it.
#[derive(Debug, Default)]
pub(crate) struct DockerIgnore {
    patterns: Vec<Pattern>,
}

#[derive(Debug)]
struct Pattern {
    /// The cleaned pattern, without `!`.
    text: String,
    exception: bool,
    matcher: GlobMatcher,
}

impl DockerIgnore {
    /// Reads `context/.dockerignore` (none means nothing is ignored) and, as the docker CLI
    /// does, keeps the Dockerfile and `.dockerignore` itself even when a pattern matches them.
    pub(crate) fn for_context(context: &Path, dockerfile: &str) -> Result<Self, ContextError> {
        let path = context.join(".dockerignore");
        let text = match read_dockerignore(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(ContextError::Io { path, error }),
        };
        let mut ignore = Self::parse(&text)?;
        for keep in [clean(dockerfile), ".dockerignore".to_owned()] {
            if ignore.excludes(Path::new(&keep)) {
                ignore
                    .push(&keep, true)
                    .map_err(|reason| ContextError::Pattern {
                        line: 0,
                        pattern: keep.clone(),
                        reason,
                    })?;
            }
        }
        Ok(ignore)
    }

    pub(crate) fn parse(text: &str) -> Result<Self, ContextError> {
        let mut ignore = Self::default();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.lines().enumerate() {
            // Docker checks for comments before trimming: ` #x` is a pattern.
            if raw.starts_with('#') {
                continue;
            }
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let (exception, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let error = |reason: String| ContextError::Pattern {
                line: i + 1,
                pattern: line.to_owned(),
                reason,
            };
            if pattern.is_empty() {
                return Err(error("`!` needs a pattern after it".to_owned()));
            }
            let mut pattern = clean(pattern);
            if pattern.len() > 1 && pattern.starts_with('/') {
                pattern.remove(0);
            }
            ignore.push(&pattern, exception).map_err(error)?;
        }
        Ok(ignore)
    }

    fn push(&mut self, text: &str, exception: bool) -> Result<(), String> {
        let matcher = GlobBuilder::new(&to_globset(text)?)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| e.kind().to_string())?
            .compile_matcher();
        self.patterns.push(Pattern {
            text: text.to_owned(),
            exception,
            matcher,
        });
        Ok(())
    }

    /// Whether `path` (relative to the context root) stays out of the context: the last
    /// pattern matching it or one of its parent directories decides.
    pub(crate) fn excludes(&self, path: &Path) -> bool {
        let parents: Vec<&Path> = path
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        let mut excluded = false;
        for p in &self.patterns {
            // Only a pattern that can change the verdict is worth matching.
            if p.exception != excluded {
                continue;
            }
            if p.matcher.is_match(path) || parents.iter().any(|d| p.matcher.is_match(d)) {
                excluded = !p.exception;
            }
        }
        excluded
    }

    /// Whether an excluded directory must still be walked because an exception names
    /// something below it. Docker decides this on the pattern's text, not by matching.
    fn may_include_below(&self, dir: &Path) -> bool {
        let dir = format!("{}/", dir.to_string_lossy());
        self.patterns
            .iter()
            .any(|p| p.exception && format!("{}/", p.text).starts_with(&dir))
    }
}

/// The largest `.dockerignore` read: real ones are a few hundred bytes.
const DOCKERIGNORE_LIMIT: u64 = 1 << 20;

/// Reads `.dockerignore` as the pushed tree has it: a regular file, not a link to a host file
/// (whose lines would come back in error messages) or to a device that never ends.
fn read_dockerignore(path: &Path) -> io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() > DOCKERIGNORE_LIMIT {
        return Err(io::Error::other(
            "it must be a regular file of at most 1 MiB in the pushed tree",
        ));
    }
    let mut text = String::new();
    file.take(DOCKERIGNORE_LIMIT).read_to_string(&mut text)?;
    Ok(text)
}

/// Go's `filepath.Clean` on a slash-separated pattern: no `.`, no empty segments, `..`
/// resolved lexically, no trailing slash.
fn clean(pattern: &str) -> String {
    let rooted = pattern.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in pattern.split('/') {
        match seg {
            "" | "." => {}
            ".." if out.last().is_some_and(|s| *s != "..") => {
                out.pop();
            }
            ".." if rooted => {}
            seg => out.push(seg),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Rewrites the Go syntax where globset reads it differently: `{a,b}` is literal in Go, and
/// `[!a]` is a class containing `!`, not a negation (Go negates with `[^a]`).
fn to_globset(pattern: &str) -> Result<String, String> {
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push('\\');
                out.push(chars.next().ok_or("a trailing `\\` escapes nothing")?);
            }
            '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '[' => {
                let mut class = String::new();
                let negated = chars.next_if_eq(&'^').is_some();
                loop {
                    match chars.next() {
                        None => return Err("unclosed `[`".to_owned()),
                        Some(']') if !class.is_empty() => break,
                        Some(c) => class.push(c),
                    }
                }
                if !negated && class.starts_with('!') {
                    if class == "!" {
                        out.push_str("\\!");
                        continue;
                    }
                    // Move the `!` so globset does not read it as a negation.
                    class = format!("{}!", &class[1..]);
                }
                out.push('[');
                if negated {
                    out.push('^');
                }
                out.push_str(&class);
                out.push(']');
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A context being streamed: give `body` to `bollard::body_try_stream`; `done` says what was
/// sent, or why the tar stopped.
pub(crate) struct TarStream {
    pub(crate) body: Chunks,
    pub(crate) done: JoinHandle<Result<ContextStats, ContextError>>,
}

/// The tar's bytes, chunk by chunk. An `Err` item means the tar is incomplete: the request
/// must fail rather than build from part of the tree.
pub(crate) struct Chunks {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl Stream for Chunks {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Starts streaming `context` as a tar. `.dockerignore` is read (and checked) before this
/// returns; the tree is walked on a blocking thread as the engine reads.
/// `inline`, a Dockerfile written in the compose file, goes at the end as `dockerfile`.
pub(crate) fn tar_stream(
    context: &Path,
    dockerfile: &str,
    inline: Option<String>,
) -> Result<TarStream, ContextError> {
    let ignore = DockerIgnore::for_context(context, dockerfile)?;
    let inline = inline.map(|text| (dockerfile.to_owned(), text));
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let root = context.to_owned();
    let done = tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter::new(tx);
        let result = write_tar(&root, &ignore, inline, &mut out).and_then(|stats| {
            out.flush().map_err(|error| ContextError::Io {
                path: root.clone(),
                error,
            })?;
            Ok(stats)
        });
        match result {
            Err(_) if out.aborted => Err(ContextError::Aborted),
            Err(e) => {
                // The engine must see a broken body, not a short tar it might build from.
                let _ = out.tx.blocking_send(Err(io::Error::other(e.to_string())));
                Err(e)
            }
            ok => ok,
        }
    });
    Ok(TarStream {
        body: Chunks { rx },
        done,
    })
}

/// Fills fixed-size chunks and hands each to the channel, waiting while it is full.
struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
    aborted: bool,
}

impl ChunkWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        Self {
            tx,
            buf: BytesMut::with_capacity(CHUNK_SIZE),
            aborted: false,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, BytesMut::with_capacity(CHUNK_SIZE)).freeze();
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            self.aborted = true;
            io::Error::new(io::ErrorKind::BrokenPipe, "the engine stopped reading")
        })
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK_SIZE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK_SIZE {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            self.send()
        }
    }
}

/// Writes the context as a tar into `out`: sorted, symlinks kept as links, modes kept, owner
/// root (as the docker CLI sends it), files streamed rather than read whole.
pub(crate) fn write_tar(
    root: &Path,
    ignore: &DockerIgnore,
    inline: Option<(String, String)>,
    out: impl Write,
) -> Result<ContextStats, ContextError> {
    let mut builder = tar::Builder::new(Guarded {
        inner: out,
        written: 0,
        failed: false,
    });
    let mut files = 0;
    let walked = open_root(root)
        .map_err(|error| ContextError::Io {
            path: root.to_owned(),
            error,
        })
        .and_then(|dir| walk(&dir, Path::new(""), ignore, &mut builder, &mut files))
        .and_then(|()| match inline {
            Some((name, text)) => append_inline(&mut builder, &name, &text, root),
            None => Ok(()),
        });
    if walked.is_err() {
        // tar::Builder writes the end-of-archive marker when dropped; after a failure that
        // would turn a partial tree into a valid-looking tar.
        builder.get_mut().failed = true;
    }
    walked?;
    let guarded = builder.into_inner().map_err(|error| ContextError::Io {
        path: root.to_owned(),
        error,
    })?;
    Ok(ContextStats {
        files,
        bytes: guarded.written,
    })
}

/// An inline Dockerfile, as a file of the context (a later entry of a name wins).
fn append_inline(
    builder: &mut tar::Builder<impl Write>,
    name: &str,
    text: &str,
    root: &Path,
) -> Result<(), ContextError> {
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, name, text.as_bytes())
        .map_err(|error| ContextError::Io {
            path: root.join(name),
            error,
        })
}

/// Counts the bytes written, and refuses to write once the tar is known to be incomplete (or
/// the walk panicked), so no end-of-archive marker follows a partial tree.
struct Guarded<W> {
    inner: W,
    written: u64,
    failed: bool,
}

impl<W: Write> Write for Guarded<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed || std::thread::panicking() {
            return Err(io::Error::other("the build context is incomplete"));
        }
        let n = self.inner.write(data)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Opens `path` as a directory, following nothing at its last step when `name` is given
/// relative to `parent`: a directory swapped for a symlink after it was listed is an error,
/// never a way out of the context.
fn open_dir(parent: Option<&File>, path: &Path) -> io::Result<File> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let fd = match parent {
        Some(dir) => nix::fcntl::openat(dir, path, flags | OFlag::O_NOFOLLOW, Mode::empty()),
        None => nix::fcntl::open(path, flags, Mode::empty()),
    };
    Ok(File::from(fd?))
}

/// Opens the context's root, which the policy judged as a real path: if it leads elsewhere
/// now, something swapped it since, and nothing is sent.
fn open_root(root: &Path) -> io::Result<File> {
    let dir = open_dir(None, root)?;
    let real = fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&dir)
    ))?;
    if real != root {
        return Err(io::Error::other(format!(
            "it now leads to `{}`; push again",
            real.display()
        )));
    }
    Ok(dir)
}

/// The sorted names in the directory open as `dir`.
fn list(dir: &File) -> io::Result<Vec<OsString>> {
    let listing = nix::dir::Dir::from_fd(dir.try_clone()?.into())?;
    let mut names: Vec<OsString> = listing
        .into_iter()
        .map(|e| e.map(|e| OsString::from_vec(e.file_name().to_bytes().to_vec())))
        .filter(|n| !matches!(n.as_ref().map(|n| n.as_bytes()), Ok(b"." | b"..")))
        .collect::<Result<_, _>>()?;
    names.sort();
    Ok(names)
}

/// Writes the directory open as `dir` (`rel` inside the context) and everything below it.
/// Every entry is reached relative to its directory's descriptor and never through a
/// symlink, so a container that can write into the context cannot swap a directory for a
/// link to `/` while it is sent.
fn walk<W: Write>(
    dir: &File,
    rel: &Path,
    ignore: &DockerIgnore,
    builder: &mut tar::Builder<W>,
    files: &mut u64,
) -> Result<(), ContextError> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |error: io::Error| ContextError::Io { path, error }
    };
    for name in list(dir).map_err(io_error(rel))? {
        if name == SECRETS_DIR {
            continue;
        }
        let rel = rel.join(&name);
        let name = Path::new(&name);
        let stat = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| io_error(&rel)(e.into()))?;
        let excluded = ignore.excludes(&rel);
        let mut header = tar::Header::new_gnu();
        // The docker CLI sends everything as root; the engine applies `COPY --chown` itself.
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(stat.st_mode & 0o7777);
        header.set_mtime(stat.st_mtime.max(0) as u64);
        match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => {
                if excluded && !ignore.may_include_below(&rel) {
                    continue;
                }
                let sub = open_dir(Some(dir), name).map_err(io_error(&rel))?;
                if !excluded {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    let mut path = rel.clone().into_os_string();
                    path.push("/");
                    builder
                        .append_data(&mut header, &path, io::empty())
                        .map_err(io_error(&rel))?;
                }
                walk(&sub, &rel, ignore, builder, files)?;
            }
            _ if excluded => {}
            SFlag::S_IFREG => {
                append_file(dir, name, &rel, &mut header, builder).map_err(io_error(&rel))?;
                *files += 1;
            }
            SFlag::S_IFLNK => {
                let target =
                    nix::fcntl::readlinkat(dir, name).map_err(|e| io_error(&rel)(e.into()))?;
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder
                    .append_link(&mut header, &rel, &target)
                    .map_err(io_error(&rel))?;
            }
            // Sockets, fifos and devices have no place in a source tree, and reading a fifo
            // would hang the build: they are left out.
            _ => {}
        }
    }
    Ok(())
}

/// Appends the regular file `name` of `dir`, opened without following a symlink (and
/// without waiting on a fifo swapped in since it was listed).
fn append_file<W: Write>(
    dir: &File,
    name: &Path,
    rel: &Path,
    header: &mut tar::Header,
    builder: &mut tar::Builder<W>,
) -> io::Result<()> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let file = File::from(nix::fcntl::openat(dir, name, flags, Mode::empty())?);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("it changed while being sent; push again"));
    }
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(meta.len());
    let reader = Exact {
        file: file.take(meta.len()),
        expected: meta.len(),
    };
    builder.append_data(header, rel, reader)
}

/// Reads exactly the size the tar header announced, and fails if the file shrank or grew
/// meanwhile: a header with the wrong size corrupts every entry after it.
struct Exact {
    file: io::Take<File>,
    expected: u64,
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let changed = self.file.limit() > 0 || self.file.get_mut().read(&mut [0u8])? > 0;
            if changed {
                return Err(io::Error::other(format!(
                    "it changed while being sent (expected {} bytes); push again",
                    self.expected
                )));
            }
        }
        Ok(n)
    }
}

/// The path of the Dockerfile inside the context, if it may be sent: relative, inside the
/// context and not under `.secrets`.
pub(crate) fn dockerfile_in_context(dockerfile: &str) -> Result<String, &'static str> {
    let path = Path::new(dockerfile);
    if path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err("it is outside the build context");
    }
    if path.components().any(|c| c.as_os_str() == SECRETS_DIR) {
        return Err("files under `.secrets` are never sent to Docker");
    }
    let cleaned = clean(dockerfile);
    if cleaned == "." {
        return Err("it names the context directory itself");
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A context directory built from `(path, content)`; a path ending in `/` is a directory.
    fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let full = dir.path().join(path);
            if path.ends_with('/') {
                fs::create_dir_all(&full).unwrap();
            } else {
                fs::create_dir_all(full.parent().unwrap()).unwrap();
                fs::write(&full, content).unwrap();
            }
        }
        dir
    }

    /// The entry names of the tar for `dir`, read back with the `tar` crate.
    fn names(dir: &Path) -> Vec<String> {
        let ignore = DockerIgnore::for_context(dir, "Dockerfile").unwrap();
        let mut tar = Vec::new();
        write_tar(dir, &ignore, None, &mut tar).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    const TREE: &[(&str, &str)] = &[
        ("Dockerfile", "FROM scratch\n"),
        ("app.py", ""),
        ("app.pyc", ""),
        ("pkg/mod.py", ""),
        ("pkg/mod.pyc", ""),
        ("pkg/deep/x.pyc", ""),
        ("docs/a.md", ""),
        ("docs/keep.md", ""),
        ("node_modules/m/index.js", ""),
        (".secrets/pw", "hunter2\n"),
        ("pkg/.secrets/pw", "hunter2\n"),
    ];

    fn names_with(ignore: &str) -> Vec<String> {
        let dir = context(TREE);
        fs::write(dir.path().join(".dockerignore"), ignore).unwrap();
        names(dir.path())
    }

    #[test]
    fn without_dockerignore_everything_but_secrets_is_sent_sorted() {
        let dir = context(TREE);
        assert_eq!(
            names(dir.path()),
            [
                "Dockerfile",
                "app.py",
                "app.pyc",
                "docs/",
                "docs/a.md",
                "docs/keep.md",
                "node_modules/",
                "node_modules/m/",
                "node_modules/m/index.js",
                "pkg/",
                "pkg/deep/",
                "pkg/deep/x.pyc",
                "pkg/mod.py",
                "pkg/mod.pyc",
            ]
        );
    }

    #[test]
    fn a_plain_star_pattern_is_anchored_at_the_root() {
        let names = names_with("*.pyc\n");
        assert!(!names.contains(&"app.pyc".to_owned()));
        assert!(names.contains(&"pkg/mod.pyc".to_owned()), "{names:?}");
        assert!(names.contains(&"pkg/deep/x.pyc".to_owned()));
    }

    #[test]
    fn double_star_matches_at_any_depth() {
        let names = names_with("**/*.pyc\n");
        assert!(names.iter().all(|n| !n.ends_with(".pyc")), "{names:?}");
        assert!(names.contains(&"pkg/mod.py".to_owned()));
    }

    #[test]
    fn a_directory_pattern_excludes_what_is_below_it() {
        let names = names_with("# deps\nnode_modules\n/docs/\n");
        assert!(
            names.iter().all(|n| !n.starts_with("node_modules")),
            "{names:?}"
        );
        assert!(names.iter().all(|n| !n.starts_with("docs")), "{names:?}");
    }

    #[test]
    fn an_exception_re_includes_and_the_last_match_wins() {
        let names = names_with("docs\n!docs/keep.md\n*.pyc\n!app.pyc\napp.*\n");
        assert!(names.contains(&"docs/keep.md".to_owned()), "{names:?}");
        assert!(!names.contains(&"docs/a.md".to_owned()));
        // The excluded directory itself is not sent, only what the exception names.
        assert!(!names.contains(&"docs/".to_owned()));
        // `app.*` comes after `!app.pyc`, so it wins.
        assert!(!names.contains(&"app.pyc".to_owned()));
        assert!(!names.contains(&"app.py".to_owned()));
    }

    #[test]
    fn secrets_are_never_sent_even_when_re_included() {
        let names = names_with("*\n!.secrets\n!.secrets/pw\n!**/.secrets\n!pkg\n");
        assert_eq!(
            names,
            [
                ".dockerignore",
                "Dockerfile",
                "pkg/",
                "pkg/deep/",
                "pkg/deep/x.pyc",
                "pkg/mod.py",
                "pkg/mod.pyc"
            ]
        );
        let names = names_with("!.secrets\n");
        assert!(names.iter().all(|n| !n.contains(".secrets")), "{names:?}");
    }

    #[test]
    fn dockerfile_and_dockerignore_are_always_sent() {
        let names = names_with("*\n");
        assert_eq!(names, [".dockerignore", "Dockerfile"]);
        // A Dockerfile in an excluded directory is reached through its parent.
        let dir = context(&[("build/Dockerfile", ""), ("build/other", "")]);
        fs::write(dir.path().join(".dockerignore"), "build\n").unwrap();
        let ignore = DockerIgnore::for_context(dir.path(), "./build/Dockerfile").unwrap();
        let mut tar = Vec::new();
        write_tar(dir.path(), &ignore, None, &mut tar).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let got: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, [".dockerignore", "build/Dockerfile"]);
    }

    #[test]
    fn go_pattern_syntax() {
        let cases: &[(&str, &str, bool)] = &[
            ("a?c", "abc", true),
            ("a?c", "a/c", false),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("[!]x", "!x", true),
            ("[!a]x", "!x", true),
            ("[!a]x", "bx", false),
            ("{a,b}", "a", false),
            ("{a,b}", "{a,b}", true),
            ("\\*", "*", true),
            ("\\*", "x", false),
            ("./a/../b/", "b", true),
            ("/top", "top", true),
            ("/top", "x/top", false),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("a/**", "a/x/y", true),
            ("**", "anything/at/all", true),
            ("*", ".hidden", true),
        ];
        for &(pattern, path, want) in cases {
            let ignore = DockerIgnore::parse(pattern).unwrap();
            assert_eq!(
                ignore.excludes(Path::new(path)),
                want,
                "{pattern:?} vs {path:?}"
            );
        }
    }

    #[test]
    fn comments_blank_lines_and_bad_patterns() {
        assert!(
            DockerIgnore::parse("# only a comment\n\n   \n")
                .unwrap()
                .patterns
                .is_empty()
        );
        let err = DockerIgnore::parse("a\n!\n").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid pattern `!` on line 2 of `.dockerignore`: `!` needs a pattern after it"
        );
        let err = DockerIgnore::parse("[abc\n").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid pattern `[abc` on line 1 of `.dockerignore`: unclosed `[`"
        );
    }

    #[test]
    fn the_tar_keeps_content_modes_and_symlinks() {
        let dir = context(&[("Dockerfile", "FROM scratch\n"), ("bin/run", "#!/bin/sh\n")]);
        let run = dir.path().join("bin/run");
        fs::set_permissions(&run, fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("bin/run", dir.path().join("link")).unwrap();
        // A link pointing at a secret is sent as a link; the secret itself is not.
        fs::create_dir(dir.path().join(".secrets")).unwrap();
        fs::write(dir.path().join(".secrets/pw"), "hunter2").unwrap();
        std::os::unix::fs::symlink(".secrets/pw", dir.path().join("pw-link")).unwrap();

        let ignore = DockerIgnore::for_context(dir.path(), "Dockerfile").unwrap();
        let mut tar = Vec::new();
        let stats = write_tar(dir.path(), &ignore, None, &mut tar).unwrap();
        assert_eq!(
            stats,
            ContextStats {
                files: 2,
                bytes: tar.len() as u64
            }
        );
        assert!(!tar.windows(7).any(|w| w == b"hunter2"));

        let mut archive = tar::Archive::new(tar.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            assert_eq!(
                (header.uid().unwrap(), header.gid().unwrap()),
                (0, 0),
                "{path}"
            );
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            let link = entry
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            seen.push((path, header.mode().unwrap(), content, link));
        }
        let modes: Vec<(&str, u32)> = seen.iter().map(|(p, m, _, _)| (p.as_str(), *m)).collect();
        assert_eq!(modes[2], ("bin/run", 0o750));
        assert_eq!(seen[2].2, "#!/bin/sh\n");
        assert_eq!(seen[3].0, "link");
        assert_eq!(seen[3].3.as_deref(), Some("bin/run"));
        assert_eq!(seen[4].0, "pw-link");
        assert_eq!(seen[4].3.as_deref(), Some(".secrets/pw"));
        assert_eq!(seen.len(), 5, "{seen:?}");
    }

    #[test]
    fn long_paths_survive() {
        let long = format!("{}/{}.txt", "d".repeat(120), "f".repeat(120));
        let dir = context(&[(long.as_str(), "x")]);
        assert!(names(dir.path()).contains(&long));
    }

    #[test]
    fn dockerfile_must_be_inside_the_context() {
        assert_eq!(
            dockerfile_in_context("./docker/Dockerfile").unwrap(),
            "docker/Dockerfile"
        );
        assert!(dockerfile_in_context("../Dockerfile").is_err());
        assert!(dockerfile_in_context("/etc/passwd").is_err());
        assert!(dockerfile_in_context(".secrets/Dockerfile").is_err());
        assert!(dockerfile_in_context(".").is_err());
    }

    #[tokio::test]
    async fn the_stream_carries_the_whole_tar_in_bounded_chunks() {
        use futures_util::StreamExt;

        let dir = context(&[("Dockerfile", "FROM scratch\n")]);
        // Larger than several chunks, so the walker has to wait for the reader.
        let big = vec![7u8; CHUNK_SIZE * (CHUNKS_IN_FLIGHT + 3) + 123];
        fs::write(dir.path().join("big.bin"), &big).unwrap();

        let TarStream { mut body, done } = tar_stream(dir.path(), "Dockerfile", None).unwrap();
        let mut tar = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= CHUNK_SIZE);
            tar.extend_from_slice(&chunk);
        }
        let stats = done.await.unwrap().unwrap();
        assert_eq!(
            stats,
            ContextStats {
                files: 2,
                bytes: tar.len() as u64
            }
        );
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut entries = archive.entries().unwrap();
        entries.next().unwrap().unwrap();
        let mut content = Vec::new();
        entries
            .next()
            .unwrap()
            .unwrap()
            .read_to_end(&mut content)
            .unwrap();
        assert_eq!(content, big);
    }

    #[tokio::test]
    async fn a_reader_that_goes_away_stops_the_walk() {
        let dir = context(&[("Dockerfile", "")]);
        fs::write(dir.path().join("big.bin"), vec![0u8; CHUNK_SIZE * 16]).unwrap();
        let TarStream { body, done } = tar_stream(dir.path(), "Dockerfile", None).unwrap();
        drop(body);
        assert!(matches!(done.await.unwrap(), Err(ContextError::Aborted)));
    }

    #[tokio::test]
    async fn a_file_that_changes_while_sent_fails_the_stream_instead_of_truncating_it() {
        use futures_util::StreamExt;

        let dir = context(&[("Dockerfile", "")]);
        let big = dir.path().join("a.big");
        fs::write(&big, vec![1u8; CHUNK_SIZE * (CHUNKS_IN_FLIGHT + 4)]).unwrap();
        let TarStream { mut body, done } = tar_stream(dir.path(), "Dockerfile", None).unwrap();
        // The first full chunk can only come from `a.big`: its header is written with the old
        // size and the walker is now held up by the bounded channel, mid-file.
        body.next().await.unwrap().unwrap();
        File::options()
            .write(true)
            .open(&big)
            .unwrap()
            .set_len(10)
            .unwrap();
        let rest: Vec<_> = body.collect().await;
        assert!(
            rest.last().unwrap().is_err(),
            "the body must end in an error"
        );
        let err = done.await.unwrap().unwrap_err().to_string();
        assert!(err.starts_with("failed to read `"), "{err}");
        assert!(err.ends_with("a.big` for the build context: it changed while being sent (expected 524288 bytes); push again"), "{err}");
    }

    /// Issue 17, finding 5: what is sent is what was judged. A context whose path leads
    /// elsewhere (a symlink swapped in after the check) sends nothing, and a link inside the
    /// context is sent as a link, never followed.
    #[test]
    fn issue17_the_context_is_walked_without_following_links() {
        let base = tempfile::tempdir().unwrap();
        let real = base.path().join("real");
        fs::create_dir_all(real.join("sub")).unwrap();
        fs::write(real.join("sub/a"), "a").unwrap();
        std::os::unix::fs::symlink("/etc", real.join("etc")).unwrap();
        let ignore = DockerIgnore::default();
        let mut tar = Vec::new();
        write_tar(&real, &ignore, None, &mut tar).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, tar::EntryType)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("etc".to_owned(), tar::EntryType::Symlink),
                ("sub/".to_owned(), tar::EntryType::Directory),
                ("sub/a".to_owned(), tar::EntryType::Regular),
            ]
        );
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = write_tar(&link, &ignore, None, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("push again"), "{err}");
    }
}
