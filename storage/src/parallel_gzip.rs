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

pub(crate) struct ParallelGzip<W: Write> {
    /// Taken by `finish`.
    out: Option<W>,
    block: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    results: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    next_job: u64,
    next_write: u64,
    ready: BTreeMap<u64, Vec<u8>>,
    max_in_flight: u64,
}

impl<W: Write> ParallelGzip<W> {
    pub(crate) fn new(out: W) -> ParallelGzip<W> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
        let (jobs, job_queue) = mpsc::sync_channel::<Job>(threads);
        let (done, results) = mpsc::channel::<Done>();
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
        ParallelGzip {
            out: Some(out),
            block: Vec::with_capacity(BLOCK),
            jobs: Some(jobs),
            results,
            workers,
            next_job: 0,
            next_write: 0,
            ready: BTreeMap::new(),
            max_in_flight: 2 * threads as u64 + 1,
        }
    }

    /// Hands the current block to the pool, first waiting while too many are in flight.
    fn dispatch(&mut self) -> io::Result<()> {
        while self.next_job - self.next_write >= self.max_in_flight {
            self.receive_one()?;
        }
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip writer already finished"))?;
        jobs.send((self.next_job, data))
            .map_err(|_| io::Error::other("gzip worker threads stopped"))?;
        self.next_job += 1;
        self.write_ready()
    }

    fn receive_one(&mut self) -> io::Result<()> {
        let (seq, member) = self
            .results
            .recv()
            .map_err(|_| io::Error::other("gzip worker threads stopped"))?;
        self.ready.insert(seq, member?);
        self.write_ready()
    }

    /// Writes every finished member that is next in order.
    fn write_ready(&mut self) -> io::Result<()> {
        while let Ok((seq, member)) = self.results.try_recv() {
            self.ready.insert(seq, member?);
        }
        while let Some(member) = self.ready.remove(&self.next_write) {
            self.out_mut()?.write_all(&member)?;
            self.next_write += 1;
        }
        Ok(())
    }

    /// Compresses what is left, writes every member and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        // An empty input still gives one (empty) member: a valid gzip file.
        if !self.block.is_empty() || self.next_job == 0 {
            self.dispatch()?;
        }
        while self.next_write < self.next_job {
            self.receive_one()?;
        }
        self.jobs.take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("gzip writer already finished"))?;
        out.flush()?;
        Ok(out)
    }

    fn out_mut(&mut self) -> io::Result<&mut W> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip writer already finished"))
    }
}

impl<W: Write> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        // Unfinished (an error elsewhere): stop the workers and wait for them, so no thread
        // outlives the writer (the builder forks containers and needs a single thread).
        self.jobs.take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.block.len();
        let n = room.min(buf.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK {
            self.dispatch()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out_mut()?.flush()
    }
}

fn compress(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 2 + 64),
        flate2::Compression::fast(),
    );
    encoder.write_all(data)?;
    encoder.finish()
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
