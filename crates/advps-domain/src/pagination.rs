//! Pagination of list endpoints: parsing `page` and `limit`, and the
//! `pagination` object of responses.

use serde::Serialize;

pub const DEFAULT_LIMIT: u32 = 10;
pub const MAX_LIMIT: u32 = 100;

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaginationError {
    #[error("Invalid page value — must be a positive integer")]
    Page,
    #[error("Invalid limit value — must be a positive integer")]
    Limit,
}

impl PageRequest {
    /// Parses the raw query values. Absent means the default; anything that
    /// is not a positive integer is refused; a limit above the maximum is
    /// clamped rather than refused, as the reference describes.
    pub fn parse(page: Option<&str>, limit: Option<&str>) -> Result<PageRequest, PaginationError> {
        let page = match page {
            None => 1,
            Some(raw) => parse_positive(raw).ok_or(PaginationError::Page)?,
        };
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(raw) => parse_positive(raw)
                .ok_or(PaginationError::Limit)?
                .min(MAX_LIMIT),
        };
        Ok(PageRequest { page, limit })
    }

    /// Rows to skip. Saturates so a huge page number simply lands past the end.
    pub fn offset(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.limit)
    }
}

fn parse_positive(raw: &str) -> Option<u32> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Digits only, so the only failure left is overflow: treat as too large.
    let value: u64 = trimmed.parse().unwrap_or(u64::MAX);
    if value == 0 {
        None
    } else {
        Some(value.min(u64::from(u32::MAX)) as u32)
    }
}

/// The `pagination` object of list responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    pub page: u32,
    pub limit: u32,
    pub total: u64,
    pub total_pages: u64,
    pub has_next: bool,
    pub has_prev: bool,
}

impl Pagination {
    pub fn new(request: PageRequest, total: u64) -> Pagination {
        let limit = u64::from(request.limit);
        let total_pages = total.div_ceil(limit);
        Pagination {
            page: request.page,
            limit: request.limit,
            total,
            total_pages,
            has_next: u64::from(request.page) < total_pages,
            has_prev: request.page > 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_clamping() {
        assert_eq!(
            PageRequest::parse(None, None).unwrap(),
            PageRequest { page: 1, limit: 10 }
        );
        assert_eq!(
            PageRequest::parse(Some("3"), Some("500")).unwrap().limit,
            100
        );
        assert_eq!(
            PageRequest::parse(Some("99999999999"), None).unwrap().page,
            u32::MAX
        );
    }

    #[test]
    fn refuses_non_positive_or_non_integer() {
        for bad in ["0", "-1", "1.5", "abc", "", " ", "+2"] {
            assert_eq!(
                PageRequest::parse(Some(bad), None),
                Err(PaginationError::Page),
                "{bad:?}"
            );
            assert_eq!(
                PageRequest::parse(None, Some(bad)),
                Err(PaginationError::Limit),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn pagination_object_matches_the_reference_example() {
        let p = Pagination::new(PageRequest { page: 1, limit: 10 }, 12);
        assert_eq!((p.total_pages, p.has_next, p.has_prev), (2, true, false));
        let p = Pagination::new(PageRequest { page: 2, limit: 10 }, 12);
        assert_eq!((p.total_pages, p.has_next, p.has_prev), (2, false, true));
        let p = Pagination::new(PageRequest { page: 1, limit: 10 }, 0);
        assert_eq!((p.total_pages, p.has_next, p.has_prev), (0, false, false));
    }

    #[test]
    fn offset_does_not_overflow() {
        let r = PageRequest {
            page: u32::MAX,
            limit: 100,
        };
        assert_eq!(r.offset(), (u64::from(u32::MAX) - 1) * 100);
    }
}
