//! gzip on every core: the tar stream is cut into fixed 1 MiB blocks, each compressed as its
//! own gzip member by a pool of threads, and the members are written in order. A file of
//! concatenated members is one valid gzip stream (RFC 1952 2.2); Go's, zlib's and flate2's
//! multi-member readers take it, as they take pigz's and pgzip's output. Blocks are cut at fixed
//! offsets, so the result does not depend on thread timing: builds stay reproducible.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const BLOCK: usize = 1 << 20;

type Job = (u64, Vec<u8>);
type Done = (u64, io::Result<Vec<u8>>);

/// The caller's thread only cuts blocks (and hashes the tar, in the layer writer); a pool
/// compresses them and one more thread puts the members in order and writes them, so hashing
/// the blob and the write syscalls run beside the tar walk instead of after it.
pub(crate) struct ParallelGzip<W: Write + Send + 'static> {
    block: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    /// Owns the output until `finish`; its result carries the first write error.
    writer: Option<JoinHandle<io::Result<W>>>,
    /// One token comes back per member written: bounds the blocks held in memory.
    written: Receiver<()>,
    next_job: u64,
    next_write: u64,
    max_in_flight: u64,
}

impl<W: Write + Send + 'static> ParallelGzip<W> {
    pub(crate) fn new(out: W) -> ParallelGzip<W> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
        let (jobs, job_queue) = mpsc::sync_channel::<Job>(threads);
        let (done, results) = mpsc::channel::<Done>();
        let (token, written) = mpsc::channel::<()>();
        let job_queue = Arc::new(Mutex::new(job_queue));
        let workers = (0..threads)
            .map(|_| {
                let queue = Arc::clone(&job_queue);
                let done = done.clone();
                std::thread::spawn(move || loop {
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, data)) = job else { return };
                    if done.send((seq, compress(&data))).is_err() {
                        return;
                    }
                })
            })
            .collect();
        drop(done);
        let writer = std::thread::spawn(move || write_in_order(out, results, token));
        ParallelGzip {
            block: Vec::with_capacity(BLOCK),
            jobs: Some(jobs),
            workers,
            writer: Some(writer),
            written,
            next_job: 0,
            next_write: 0,
            max_in_flight: 2 * threads as u64 + 2,
        }
    }

    /// Hands the current block to the pool, first waiting while too many are in flight.
    fn dispatch(&mut self) -> io::Result<()> {
        while self.next_job - self.next_write >= self.max_in_flight {
            if self.written.recv().is_err() {
                return Err(self.stopped());
            }
            self.next_write += 1;
        }
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let sent = match self.jobs.as_ref() {
            Some(jobs) => jobs.send((self.next_job, data)).is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.stopped());
        }
        self.next_job += 1;
        Ok(())
    }

    /// The writer thread stopped early: stop everything and return its error.
    fn stopped(&mut self) -> io::Error {
        match self.shut_down() {
            Some(Err(e)) => e,
            _ => io::Error::other("gzip writer thread stopped"),
        }
    }

    /// Closes the job queue and joins every thread; returns the writer's result (once).
    fn shut_down(&mut self) -> Option<io::Result<W>> {
        self.jobs.take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        let writer = self.writer.take()?;
        Some(
            writer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("gzip writer thread panicked"))),
        )
    }

    /// Compresses what is left, writes every member and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        // An empty input still gives one (empty) member: a valid gzip file.
        if !self.block.is_empty() || self.next_job == 0 {
            self.dispatch()?;
        }
        let mut out = self
            .shut_down()
            .unwrap_or_else(|| Err(io::Error::other("gzip writer already finished")))?;
        out.flush()?;
        Ok(out)
    }
}

/// The writer thread: members arrive in any order and leave in sequence.
fn write_in_order<W: Write>(
    mut out: W,
    results: Receiver<Done>,
    token: mpsc::Sender<()>,
) -> io::Result<W> {
    let mut ready = BTreeMap::new();
    let mut next = 0u64;
    for (seq, member) in results {
        ready.insert(seq, member?);
        while let Some(member) = ready.remove(&next) {
            out.write_all(&member)?;
            next += 1;
            // The producer may have finished and stopped listening: nothing to bound then.
            let _ = token.send(());
        }
    }
    if !ready.is_empty() {
        return Err(io::Error::other("gzip member missing from the sequence"));
    }
    Ok(out)
}

impl<W: Write + Send + 'static> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        // Unfinished (an error elsewhere): stop the threads and wait for them, so no thread
        // outlives the writer (the builder forks containers and needs a single thread).
        let _ = self.shut_down();
    }
}

impl<W: Write + Send + 'static> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.block.len();
        let n = room.min(buf.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK {
            self.dispatch()?;
        }
        Ok(n)
    }

    /// Members are written by their own thread; a flush only makes sense at `finish`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Pieces of a block are classified on their own: a layer often mixes text with data that is
/// already compressed (archives, images, random bytes), which deflate only makes bigger, at
/// ~100 MB/s per core instead of the ~3 GB/s it takes to store it.
const PIECE: usize = 128 << 10;
/// How much of a piece is test-compressed to classify it (1/16 of the work of compressing it).
const SAMPLE: usize = 8 << 10;

/// Compresses one block into gzip members: consecutive compressible pieces share a member at
/// the fast level, incompressible ones are stored. For ordinary data this is one member, as a
/// plain gzip of the block.
fn compress(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    if data.is_empty() {
        write_member(&mut out, data, flate2::Compression::fast())?;
        return Ok(out);
    }
    let stored: Vec<bool> = data.chunks(PIECE).map(looks_incompressible).collect();
    let mut start = 0;
    while start < stored.len() {
        let end = (start..stored.len())
            .find(|&i| stored[i] != stored[start])
            .unwrap_or(stored.len());
        let level = if stored[start] {
            flate2::Compression::none()
        } else {
            flate2::Compression::fast()
        };
        let bytes = &data[start * PIECE..(end * PIECE).min(data.len())];
        write_member(&mut out, bytes, level)?;
        start = end;
    }
    Ok(out)
}

fn write_member(out: &mut Vec<u8>, bytes: &[u8], level: flate2::Compression) -> io::Result<()> {
    let mut encoder = flate2::write::GzEncoder::new(out, level);
    encoder.write_all(bytes)?;
    encoder.finish().map(|_| ())
}

/// True when a sample of `piece` does not shrink at the fast level: deflate would waste its
/// time and add ~5% to the size.
fn looks_incompressible(piece: &[u8]) -> bool {
    let sample = &piece[..piece.len().min(SAMPLE)];
    if sample.len() < 1024 {
        return false;
    }
    let mut deflate = flate2::Compress::new(flate2::Compression::fast(), false);
    let mut compressed = Vec::with_capacity(sample.len() + sample.len() / 8 + 64);
    match deflate.compress_vec(sample, &mut compressed, flate2::FlushCompress::Finish) {
        Ok(flate2::Status::StreamEnd) => compressed.len() * 100 >= sample.len() * 97,
        // Ran out of room: bigger than the sample plus 1/8, surely incompressible.
        Ok(_) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn roundtrip(data: &[u8]) -> Vec<u8> {
        let mut gz = ParallelGzip::new(Vec::new());
        // Odd write sizes cross block boundaries.
        for chunk in data.chunks(77_777) {
            gz.write_all(chunk).unwrap();
        }
        let compressed = gz.finish().unwrap();
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&compressed[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn members_decode_to_the_input_in_order() {
        let data: Vec<u8> = (0..5 * BLOCK + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        assert_eq!(roundtrip(&data), data);
        assert_eq!(roundtrip(b"small"), b"small");
        assert_eq!(roundtrip(b""), b"");
    }

    #[test]
    fn incompressible_pieces_are_stored_and_the_rest_compressed() {
        // Pseudo-random bytes (xorshift) around a run of text, crossing piece and block ends.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut data: Vec<u8> = (0..BLOCK + 3 * PIECE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let text = b"a line of text that deflate shrinks well\n".repeat(4 * PIECE / 40);
        data.splice(2 * PIECE..2 * PIECE, text.iter().copied());
        let mut gz = ParallelGzip::new(Vec::new());
        gz.write_all(&data).unwrap();
        let compressed = gz.finish().unwrap();
        let random_len = data.len() - text.len();
        // Stored random bytes cost ~0.1% of framing; deflating them would add ~5%, and the
        // text must still shrink to a small part of its size.
        assert!(compressed.len() < random_len + random_len / 100 + text.len() / 20);
        assert!(compressed.len() > random_len);
        assert_eq!(roundtrip(&data), data);
    }

    #[test]
    fn output_is_deterministic() {
        let data: Vec<u8> = (0..3 * BLOCK + 5).map(|i| (i % 13) as u8).collect();
        let once = |d: &[u8]| {
            let mut gz = ParallelGzip::new(Vec::new());
            gz.write_all(d).unwrap();
            gz.finish().unwrap()
        };
        assert_eq!(once(&data), once(&data));
    }
}
