//! Ingest one layer blob into a store, for timing and peak memory:
//! `ingest ROOT BLOB MEDIA_TYPE DIFF_ID DIGEST`.

use std::fs::File;
use std::time::Instant;

use gcr_storage::{Digest, LayerExpectation, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, root, blob, media_type, diff_id, digest] = args.as_slice() else {
        return Err("usage: ingest ROOT BLOB MEDIA_TYPE DIFF_ID DIGEST".into());
    };
    let bytes = std::fs::metadata(blob)?.len();
    let digest: Digest = digest.parse()?;
    let store = Store::open(root)?;
    let start = Instant::now();
    let expect = LayerExpectation {
        digest,
        size: bytes,
        media_type: media_type.clone(),
        diff_id: diff_id.parse()?,
    };
    store.ingest_layer(&mut File::open(blob)?, &expect, &mut |_| {})?;
    eprintln!(
        "ingested {bytes} bytes in {:.3}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
