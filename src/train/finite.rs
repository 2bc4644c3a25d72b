//! Weights read from a file must be finite: a NaN or infinity in a HF checkpoint would only
//! surface as "the loss is not finite" at step 1. The first offending tensor is named.

use crate::error::Result;
use crate::model::ParamLayout;
use crate::user;
use std::path::Path;

/// Returns `units` when every value is finite; else an error naming the tensor and `dir`.
pub fn checked(units: Vec<Vec<f32>>, layout: &ParamLayout, dir: &Path) -> Result<Vec<Vec<f32>>> {
    for (u, t) in layout.tensors() {
        let values = &units[u][t.offset..t.offset + t.numel()];
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            return Err(user!(
                "{}: tensor `{}` holds {} at element {i} (weights must be finite)",
                dir.display(),
                t.name,
                values[i]
            ));
        }
    }
    Ok(units)
}
