//! Which images and names an archive holds (`save`, the Docker API's `images/get`) and the
//! name rule of `load`.

use gcr_storage::{SaveRequest, Store};

use crate::{find, normalize_name, Result};

/// The images `inputs` name, each once, with the names given as names (Docker's rule: an
/// image given by ID is saved without a name).
pub fn save_requests(store: &Store, inputs: &[String]) -> Result<Vec<SaveRequest>> {
    let mut requests: Vec<SaveRequest> = Vec::new();
    for input in inputs {
        let record = find(store, input)?;
        let name = [input.clone(), normalize_name(input).unwrap_or_default()]
            .into_iter()
            .find(|n| record.names.contains(n));
        match requests.iter_mut().find(|r| r.record.id == record.id) {
            Some(existing) => {
                if let Some(name) = name {
                    if !existing.names.contains(&name) {
                        existing.names.push(name);
                    }
                }
            }
            None => requests.push(SaveRequest {
                record,
                names: name.into_iter().collect(),
            }),
        }
    }
    Ok(requests)
}

/// The name rule `load` gives the store: names as `normalize_name` makes them.
pub fn load_name(name: &str) -> std::result::Result<String, String> {
    normalize_name(name).map_err(|e| e.to_string())
}
