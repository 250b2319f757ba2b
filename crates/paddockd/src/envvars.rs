//! The one rule for environment variable names, for Exec's `env` and an
//! environment's baked-in variables alike: a letter or `_`, then letters,
//! digits and `_` (what a shell can name).

/// Checks every name; the error names the first bad one.
pub fn check_names<'a>(names: impl IntoIterator<Item = &'a String>) -> Result<(), String> {
    for k in names {
        let ok = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(format!(
                "env: {k:?} is not a valid variable name (a letter or '_', then letters, digits or '_')"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let good = ["PATH".to_string(), "_x1".into(), "a".into()];
        assert!(check_names(&good).is_ok());
        for bad in ["", "1A", "A=B", "A-B", "A\0", "A B"] {
            assert!(check_names(&[bad.to_string()]).is_err(), "{bad:?}");
        }
    }
}
