//! Providers feed the [`crate::store::Store`]: `file` reads a directory of
//! YAML (standalone mode); `kube` watches the Kubernetes API (cluster mode).

pub mod file;
pub mod kube;
