//! Where a URL that may hold a secret is written: in the config itself
//! (`KEY`), in an environment variable (`KEY_env`) or in a file
//! (`KEY_file`), exactly one of them. Webhook URLs and the fleet's Redis URL
//! are both given this way, so both say the same thing when it is wrong.

use std::path::Path;

/// A problem with one key of a section: (key, what is wrong).
pub(super) type KeyError = (&'static str, String);

pub(super) struct UrlSource<'a> {
    /// The keys as written: `url`, `url_env`, `url_file`.
    pub keys: [&'static str; 3],
    pub inline: Option<&'a str>,
    pub env: Option<&'a str>,
    pub file: Option<&'a Path>,
}

impl UrlSource<'_> {
    /// Exactly one of the three keys is set.
    pub fn check_one(&self) -> Result<(), KeyError> {
        let [key, env_key, file_key] = self.keys;
        let set = [
            self.inline.is_some(),
            self.env.is_some(),
            self.file.is_some(),
        ];
        match set.iter().filter(|s| **s).count() {
            0 => Err(self.none_set()),
            1 => Ok(()),
            _ => Err((
                key,
                format!("set only one of {key}, {env_key} or {file_key}"),
            )),
        }
    }

    /// The URL's text, with the key it came through.
    pub fn read(&self) -> Result<(&'static str, String), KeyError> {
        let [key, env_key, file_key] = self.keys;
        if let Some(url) = self.inline {
            Ok((key, url.to_string()))
        } else if let Some(var) = self.env {
            let text = std::env::var(var).map_err(|_| {
                (
                    env_key,
                    format!(
                        "environment variable `{var}` is not set \
                         (the systemd service reads it from /etc/default/tailhook)"
                    ),
                )
            })?;
            Ok((env_key, text))
        } else if let Some(path) = self.file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| (file_key, format!("cannot read {}: {e}", path.display())))?;
            Ok((file_key, text))
        } else {
            Err(self.none_set())
        }
    }

    fn none_set(&self) -> KeyError {
        let [key, env_key, file_key] = self.keys;
        (key, format!("set one of {key}, {env_key} or {file_key}"))
    }

    /// A problem with the text read through `key`: one read from a file
    /// names the file.
    pub fn invalid(&self, key: &'static str, problem: String) -> KeyError {
        match self.file {
            Some(path) if key == self.keys[2] => (key, format!("{}: {problem}", path.display())),
            _ => (key, problem),
        }
    }
}
