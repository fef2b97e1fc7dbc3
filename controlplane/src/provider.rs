//! Providers feed the [`crate::store::Store`]: `file` reads a directory of
//! YAML (standalone mode); the Kubernetes provider arrives with kube mode.

pub mod file;
