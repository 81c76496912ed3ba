//! Byte ranges as clients ask for them.

use crate::registry::RangeSpec;

#[test]
fn ranges() {
    assert_eq!(RangeSpec::parse("bytes=0-9"), Some(RangeSpec::FromTo(0, 9)));
    assert_eq!(RangeSpec::parse("bytes=5-"), Some(RangeSpec::From(5)));
    assert_eq!(RangeSpec::parse("bytes=-3"), Some(RangeSpec::Last(3)));
    assert_eq!(RangeSpec::parse("bytes=1-2,4-5"), None);
    assert_eq!(RangeSpec::parse("items=1-2"), None);
    assert_eq!(RangeSpec::FromTo(0, 99).resolve(10).unwrap(), (0, 9));
    assert_eq!(RangeSpec::Last(3).resolve(10).unwrap(), (7, 9));
    assert_eq!(RangeSpec::Last(30).resolve(10).unwrap(), (0, 9));
    assert!(RangeSpec::From(10).resolve(10).is_err());
    assert!(RangeSpec::FromTo(5, 4).resolve(10).is_err());
}
