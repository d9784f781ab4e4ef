//! Upload and download of dump files with aws-sdk-s3. AWS types stay in this file.
//!
//! Credentials come from the standard AWS chain (environment, profile, instance role);
//! `endpoint_url` points the client elsewhere (moto in the tests), with path-style addressing so
//! that a bucket needs no DNS name of its own.

use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;

use super::BackupError;

/// A bucket and key prefix, with the client to reach them.
#[derive(Clone, Debug)]
pub struct S3Location {
    client: aws_sdk_s3::Client,
    pub bucket: String,
    pub prefix: String,
}

impl S3Location {
    /// `uri` is `s3://bucket/prefix/`; `endpoint_url` overrides AWS's (e.g. moto on loopback).
    /// AWS keys given explicitly in `vars` replace the SDK's standard chain.
    pub async fn new(uri: &str, region: &str, endpoint_url: Option<&str>, vars: &crate::secrets::Vars) -> Result<S3Location, BackupError> {
        let (bucket, prefix) = crate::config::parse_s3_uri(uri).map_err(BackupError::Config)?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(5)).build());
        if let Some((id, secret, token)) = vars.explicit_aws_keys() {
            let credentials = aws_sdk_s3::config::Credentials::new(id, secret.expose(), token.map(|t| t.expose().to_string()), None, "deploybot-vars");
            loader = loader.credentials_provider(credentials);
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared).force_path_style(true);
        if let Some(url) = endpoint_url {
            config = config.endpoint_url(url);
        }
        Ok(S3Location { client: aws_sdk_s3::Client::from_conf(config.build()), bucket, prefix })
    }

    pub fn uri_of(&self, file_name: &str) -> String {
        format!("s3://{}/{}{file_name}", self.bucket, self.prefix)
    }

    /// Uploads `path` as `<prefix><file name>`; the object's `s3://` URI.
    #[tracing::instrument(skip_all, fields(bucket = %self.bucket, path = %path.display()))]
    pub async fn upload(&self, path: &Path, file_name: &str) -> Result<String, BackupError> {
        let uri = self.uri_of(file_name);
        let body = ByteStream::from_path(path).await.map_err(|e| BackupError::Io(format!("cannot read {}: {e}", path.display())))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(format!("{}{file_name}", self.prefix))
            .content_type("application/sql")
            .body(body)
            .send()
            .await
            .map_err(|e| BackupError::S3 { action: "upload to", uri: uri.clone(), cause: DisplayErrorContext(&e).to_string() })?;
        Ok(uri)
    }

    /// Downloads the object at `uri` (which must be in this bucket) into `path`.
    #[tracing::instrument(skip_all, fields(uri = %uri, path = %path.display()))]
    pub async fn download(&self, uri: &str, path: &Path) -> Result<u64, BackupError> {
        let key = uri
            .strip_prefix(&format!("s3://{}/", self.bucket))
            .ok_or_else(|| BackupError::Config(format!("{uri} is not in the configured bucket {}", self.bucket)))?;
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| BackupError::S3 { action: "download from", uri: uri.to_string(), cause: DisplayErrorContext(&e).to_string() })?;
        let partial = path.with_extension("sql.part");
        let mut file = tokio::fs::File::create(&partial).await.map_err(|e| BackupError::Io(format!("cannot create {}: {e}", partial.display())))?;
        let mut body = object.body.into_async_read();
        let copied = tokio::io::copy(&mut body, &mut file).await;
        drop(file);
        match copied {
            Ok(n) => {
                tokio::fs::rename(&partial, path).await.map_err(|e| BackupError::Io(format!("cannot move the download to {}: {e}", path.display())))?;
                Ok(n)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                Err(BackupError::S3 { action: "download from", uri: uri.to_string(), cause: e.to_string() })
            }
        }
    }

    /// Writes and deletes a small object under the prefix: the destination takes uploads with the
    /// configured credentials (the checklist's "backup destination writable").
    #[tracing::instrument(skip_all, fields(bucket = %self.bucket))]
    pub async fn check_writable(&self) -> Result<(), BackupError> {
        let name = ".deploybot-write-check";
        let uri = self.uri_of(name);
        let key = format!("{}{name}", self.prefix);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(ByteStream::from_static(b"deploybot checks that backups can be written here\n"))
            .send()
            .await
            .map_err(|e| BackupError::S3 { action: "write a test object to", uri: uri.clone(), cause: DisplayErrorContext(&e).to_string() })?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| BackupError::S3 { action: "delete the test object from", uri, cause: DisplayErrorContext(&e).to_string() })?;
        Ok(())
    }
}
