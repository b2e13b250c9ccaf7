/// The Qwen2/Qwen3 split pattern, implemented as a hand-written scanner with the exact
/// semantics of the regex (leftmost alternative wins, greedy quantifiers with backtracking):
///
///     (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*
///     |\s*[\r\n]+|\s+(?!\S)|\s+
///
/// \p{L} and \p{N} are Unicode general categories L* and N*, \s is White_Space.
/// A scanner over classified scalars is an order of magnitude faster than a backtracking
/// regex engine and has no catastrophic cases on long runs.
struct PreTokenizer {
    /// Character classes as bit flags.
    static let letter: UInt8 = 1
    static let number: UInt8 = 2
    static let space: UInt8 = 4      // White_Space
    static let newline: UInt8 = 8    // \r or \n

    private static let asciiClasses: [UInt8] = (0..<128).map { classify(slow: Unicode.Scalar(UInt8($0))) }

    static func classify(_ s: UInt32) -> UInt8 {
        if s < 128 { return asciiClasses[Int(s)] }
        return classify(slow: Unicode.Scalar(s)!)
    }

    static func classify(slow s: Unicode.Scalar) -> UInt8 {
        if s == "\r" || s == "\n" { return space | newline }
        let p = s.properties
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return number
        default:
            return p.isWhitespace ? space : 0
        }
    }

    /// Splits `scalars` (with their classes) into pieces; calls `emit(start, end)` with
    /// scalar index ranges, in order, covering the input exactly.
    @inline(__always)
    static func split(scalars: UnsafeBufferPointer<UInt32>, classes: UnsafeBufferPointer<UInt8>,
                      emit: (Int, Int) -> Void) {
        let n = scalars.count
        var i = 0
        while i < n {
            let end = matchAt(i, scalars: scalars, classes: classes)
            emit(i, end)
            i = end
        }
    }

    @inline(__always)
    private static func isLetter(_ c: UInt8) -> Bool { c & letter != 0 }
    @inline(__always)
    private static func isNumber(_ c: UInt8) -> Bool { c & number != 0 }
    @inline(__always)
    private static func isSpace(_ c: UInt8) -> Bool { c & space != 0 }

    /// Returns the end of the piece that starts at `i`.
    private static func matchAt(_ i: Int, scalars s: UnsafeBufferPointer<UInt32>,
                                classes c: UnsafeBufferPointer<UInt8>) -> Int {
        let n = s.count
        let ch = s[i]
        let cl = c[i]

        // 1. (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if ch == 0x27, i + 1 < n {
            let a = lowerASCII(s[i + 1])
            if a == 0x73 || a == 0x74 || a == 0x6D || a == 0x64 { return i + 2 }  // s t m d
            if i + 2 < n {
                let b = lowerASCII(s[i + 2])
                if (a == 0x72 && b == 0x65) || (a == 0x76 && b == 0x65) || (a == 0x6C && b == 0x6C) {
                    return i + 3  // re ve ll
                }
            }
        }
        // 2. [^\r\n\p{L}\p{N}]?\p{L}+
        if isLetter(cl) {
            return letterRunEnd(from: i + 1, c)
        }
        if cl & (number | newline) == 0, i + 1 < n, isLetter(c[i + 1]) {
            return letterRunEnd(from: i + 2, c)
        }
        // 3. \p{N}
        if isNumber(cl) { return i + 1 }
        // 4.  ?[^\s\p{L}\p{N}]+[\r\n]*
        let other: UInt8 = letter | number | space
        var j = -1
        if ch == 0x20, i + 1 < n, c[i + 1] & other == 0 {
            j = i + 1
        } else if cl & other == 0 {
            j = i
        }
        if j >= 0 {
            while j < n, c[j] & other == 0 { j += 1 }
            while j < n, c[j] & newline != 0 { j += 1 }
            return j
        }
        // Only whitespace remains possible here.
        var runEnd = i
        var lastNewline = -1
        while runEnd < n, isSpace(c[runEnd]) {
            if c[runEnd] & newline != 0 { lastNewline = runEnd }
            runEnd += 1
        }
        // 5. \s*[\r\n]+
        if lastNewline >= 0 { return lastNewline + 1 }
        // 6. \s+(?!\S)
        if runEnd == n { return runEnd }
        if runEnd - 1 > i { return runEnd - 1 }
        // 7. \s+
        return runEnd
    }

    @inline(__always)
    private static func letterRunEnd(from start: Int, _ c: UnsafeBufferPointer<UInt8>) -> Int {
        var j = start
        while j < c.count, c[j] & letter != 0 { j += 1 }
        return j
    }

    /// ASCII lower-casing plus the one non-ASCII scalar that case-folds onto these letters:
    /// U+017F LATIN SMALL LETTER LONG S folds to "s" under (?i).
    @inline(__always)
    private static func lowerASCII(_ x: UInt32) -> UInt32 {
        if x >= 0x41 && x <= 0x5A { return x | 0x20 }
        if x == 0x17F { return 0x73 }
        return x
    }
}
