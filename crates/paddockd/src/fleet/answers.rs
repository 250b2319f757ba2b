//! Merging the answers of every node to one call (environments are defined
//! on each node under one id): which answer the router gives.

use std::sync::Arc;

use paddock_proto::v1 as pb;

use super::nodes::Node;
use crate::core::{Code, Error, Result};

/// The first answer that is not an error; else the most telling error
/// (anything but NOT_FOUND, which every node without the object gives).
pub(super) fn first_ok<T>(answers: Vec<(Arc<Node>, Result<T>)>) -> Result<T> {
    let mut err = None;
    for (_, r) in answers {
        match r {
            Ok(v) => return Ok(v),
            Err(e) if err.is_none() || e.code() != Code::NotFound => err = Some(e),
            Err(_) => {}
        }
    }
    Err(err.unwrap_or_else(|| Error::unavailable("no node answered")))
}

/// The view of an environment to show: one that is ready somewhere, else any.
pub(super) fn best_environment(views: impl IntoIterator<Item = pb::Environment>) -> Option<pb::Environment> {
    let mut views: Vec<_> = views.into_iter().collect();
    let ready = views.iter().position(|e| e.state == pb::BuildState::Ready as i32);
    match ready {
        Some(i) => Some(views.swap_remove(i)),
        None => views.into_iter().next(),
    }
}
