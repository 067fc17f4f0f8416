//! `--migration NAME`: run a command on some of a file's migrations. A file is otherwise all
//! or nothing; a scheduled re-sync runs one Job per migration.

use super::model::Spec;

/// A `--migration` name the file does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: no migration named {name:?} (migrations in the file: {available})")]
pub struct UnknownMigration {
    pub path: String,
    pub name: String,
    pub available: String,
}

impl Spec {
    /// Keeps only the migrations named in `names`, in file order. An empty `names` keeps
    /// every migration; a name the file does not have is an error (a typo in a CronJob must
    /// not become a run that does nothing and succeeds).
    pub fn select(&mut self, names: &[String]) -> Result<(), UnknownMigration> {
        if names.is_empty() {
            return Ok(());
        }
        if let Some(name) = names.iter().find(|n| !self.migrations.iter().any(|m| &m.name == *n)) {
            return Err(UnknownMigration {
                path: self.path.display().to_string(),
                name: name.clone(),
                available: self.migrations.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "),
            });
        }
        self.migrations.retain(|m| names.contains(&m.name));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const FILE: &str = r#"version = 1
[clusters.source]
context = "in-cluster"
[clusters.destination]
context = "lab-dst"
[[migration]]
name = "a"
namespaces = ["a"]
[[migration]]
name = "b"
namespaces = ["b"]
[[migration]]
name = "c"
namespaces = ["c"]
"#;

    fn names(spec: &super::Spec) -> Vec<&str> {
        spec.migrations.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn selects_migrations_in_file_order_and_refuses_unknown_names() {
        let spec = crate::spec::parse(FILE, Path::new("d.toml")).unwrap();
        let mut all = spec.clone();
        all.select(&[]).unwrap();
        assert_eq!(names(&all), ["a", "b", "c"]);
        let mut some = spec.clone();
        some.select(&["c".into(), "a".into()]).unwrap();
        assert_eq!(names(&some), ["a", "c"]);
        let mut bad = spec;
        let e = bad.select(&["a".into(), "x".into()]).unwrap_err();
        assert_eq!(e.to_string(), "d.toml: no migration named \"x\" (migrations in the file: a, b, c)");
    }

    #[test]
    fn in_cluster_is_never_looked_up_in_the_kubeconfig() {
        let spec = crate::spec::parse(FILE, Path::new("d.toml")).unwrap();
        assert!(crate::spec::contexts::needs_kubeconfig(&spec));
        crate::spec::contexts::check(&spec, Path::new("kc"), &["lab-dst".into()]).unwrap();
        let p = crate::spec::contexts::check(&spec, Path::new("kc"), &["lab-src".into()]).unwrap_err();
        assert_eq!(p.problems.len(), 1, "{p}");
        assert!(p.problems[0].message.contains("destination context \"lab-dst\""), "{p}");
    }
}
