//! Maps a request path to an endpoint of the distribution API. Repository names contain
//! slashes, so the path is read from its end.

#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Base,
    Catalog,
    Tags { name: String },
    Manifest { name: String, reference: &'a str },
    Blob { name: String, digest: &'a str },
    UploadStart { name: String },
    Upload { name: String, id: &'a str },
    Referrers { name: String, digest: &'a str },
    NotFound,
}

impl<'a> Route<'a> {
    pub fn parse(path: &'a str) -> Route<'a> {
        let Some(rest) = path.strip_prefix("/v2/").or_else(|| (path == "/v2").then_some("")) else {
            return Route::NotFound;
        };
        if rest.is_empty() {
            return Route::Base;
        }
        if rest == "_catalog" {
            return Route::Catalog;
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        let name = |k: usize| segs[..n - k].join("/");
        if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
            return Route::Tags { name: name(2) };
        }
        if n >= 2 && segs[n - 2] == "manifests" {
            return Route::Manifest { name: name(2), reference: segs[n - 1] };
        }
        if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
            return if segs[n - 1].is_empty() {
                Route::UploadStart { name: name(3) }
            } else {
                Route::Upload { name: name(3), id: segs[n - 1] }
            };
        }
        if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
            return Route::UploadStart { name: name(2) };
        }
        if n >= 2 && segs[n - 2] == "blobs" {
            return Route::Blob { name: name(2), digest: segs[n - 1] };
        }
        if n >= 2 && segs[n - 2] == "referrers" {
            return Route::Referrers { name: name(2), digest: segs[n - 1] };
        }
        Route::NotFound
    }

    /// The endpoint's kind, a bounded label for metrics (never the repository name).
    pub fn kind(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags { .. } => "tags",
            Route::Manifest { .. } => "manifest",
            Route::Blob { .. } => "blob",
            Route::UploadStart { .. } | Route::Upload { .. } => "upload",
            Route::Referrers { .. } => "referrers",
            Route::NotFound => "notfound",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/v2/"), Route::Base);
        assert_eq!(Route::parse("/v2"), Route::Base);
        assert_eq!(Route::parse("/v2/_catalog"), Route::Catalog);
        assert_eq!(Route::parse("/v2/a/b/tags/list"), Route::Tags { name: "a/b".into() });
        assert_eq!(Route::parse("/v2/a/manifests/latest"), Route::Manifest { name: "a".into(), reference: "latest" });
        assert_eq!(Route::parse("/v2/a/b/blobs/sha256:x"), Route::Blob { name: "a/b".into(), digest: "sha256:x" });
        assert_eq!(Route::parse("/v2/a/blobs/uploads/"), Route::UploadStart { name: "a".into() });
        assert_eq!(Route::parse("/v2/a/blobs/uploads"), Route::UploadStart { name: "a".into() });
        assert_eq!(Route::parse("/v2/a/blobs/uploads/u-1"), Route::Upload { name: "a".into(), id: "u-1" });
        assert_eq!(Route::parse("/v2/a/referrers/sha256:x"), Route::Referrers { name: "a".into(), digest: "sha256:x" });
        assert_eq!(Route::parse("/v2/blobs/manifests/x"), Route::Manifest { name: "blobs".into(), reference: "x" });
        assert_eq!(Route::parse("/other"), Route::NotFound);
        assert_eq!(Route::parse("/v2/a"), Route::NotFound);
        assert_eq!(Route::parse("/v2/a/b/blobs/uploads/u-1").kind(), "upload");
        assert_eq!(Route::parse("/v2/a/b/manifests/latest").kind(), "manifest");
        assert_eq!(Route::parse("/v2/_catalog").kind(), "catalog");
    }

    /// Events borrow the repository from the path (`App::observe`): a name must be the
    /// path's own text after `/v2/`, not only equal to it once joined.
    #[test]
    fn a_name_is_the_text_after_v2_in_its_path() {
        for path in
            ["/v2/a/manifests/t", "/v2/a/b/c/blobs/sha256:x", "/v2/a//b/blobs/uploads/", "/v2/x/blobs/uploads/u"]
        {
            let name = match Route::parse(path) {
                Route::Manifest { name, .. }
                | Route::Blob { name, .. }
                | Route::UploadStart { name }
                | Route::Upload { name, .. } => name,
                other => panic!("{path}: {other:?}"),
            };
            assert_eq!(path.get(4..4 + name.len()), Some(name.as_str()), "{path}");
        }
    }
}
