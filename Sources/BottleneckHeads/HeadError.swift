import Foundation

/// Errors raised by classifier heads, scalers, cross-validation and model persistence.
///
/// Every case carries enough context (dimensions, class names, file paths) for the message
/// to say what is wrong and what to do about it.
public enum HeadError: Error, CustomStringConvertible, Equatable {
    /// The feature matrix has `got` columns where `expected` were required (e.g. model trained on another backbone).
    case dimensionMismatch(expected: Int, got: Int, context: String)
    /// The number of labels does not match the number of feature rows.
    case labelCountMismatch(rows: Int, labels: Int)
    /// A label index is outside `0..<classCount`.
    case unknownClass(label: Int, classCount: Int)
    /// A class name is not known to the model.
    case unknownClassName(String)
    /// A class has no training samples.
    case emptyClass(index: Int, name: String)
    /// Training needs at least two classes with samples.
    case singleClass(name: String)
    /// The data contain NaN or infinite values.
    case nonFinite(row: Int, column: Int, context: String)
    /// No rows at all.
    case emptyData(context: String)
    /// A hyper-parameter is out of range.
    case invalidParameter(String)
    /// A saved model cannot be used.
    case invalidModel(path: String, reason: String)
    /// Reading or writing a file failed.
    case io(path: String, reason: String)

    public var description: String {
        switch self {
        case let .dimensionMismatch(e, g, c):
            return "\(c): features have \(g) columns but \(e) are expected; use features extracted with the same backbone, cut and pooling"
        case let .labelCountMismatch(r, l):
            return "feature matrix has \(r) rows but \(l) labels were given"
        case let .unknownClass(l, k):
            return "label \(l) is not a valid class index (expected 0..<\(k))"
        case let .unknownClassName(n):
            return "class '\(n)' is not one of the model's classes"
        case let .emptyClass(i, n):
            return "class \(i) ('\(n)') has no training samples; remove it from the class list or add images"
        case let .singleClass(n):
            return "training data contain only one class ('\(n)'); a classifier needs at least two"
        case let .nonFinite(r, c, ctx):
            return "\(ctx): non-finite value (NaN or Inf) at row \(r), column \(c); re-extract the features or drop the row"
        case let .emptyData(c):
            return "\(c): no samples"
        case let .invalidParameter(m):
            return "invalid parameter: \(m)"
        case let .invalidModel(p, r):
            return "\(p): invalid model: \(r)"
        case let .io(p, r):
            return "\(p): \(r)"
        }
    }
}
