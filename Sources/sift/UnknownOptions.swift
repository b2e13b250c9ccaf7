import ArgumentParser
import Foundation

/// ArgumentParser reports a missing required option before an unknown one, so `serve --modle X`
/// would say "Missing expected argument '--model'". The misspelling is the real cause: this finds
/// an option the chosen (sub)command does not know, and the known one it most resembles.
enum UnknownOptions {
    /// The first `--option` in `arguments` that the command they select does not know.
    static func first(in arguments: [String], root: any ParsableCommand.Type = SiftCommand.self)
        -> (option: String, suggestion: String?, command: String)? {
        var command = root
        var path = [root.configuration.commandName ?? "sift"]
        var rest = arguments[...]
        // Walk down the subcommands named at the front.
        while let name = rest.first,
              let sub = command.configuration.subcommands.first(where: { $0.configuration.commandName == name }) {
            command = sub
            path.append(name)
            rest = rest.dropFirst()
        }
        let help = command.helpMessage(includeHidden: true, columns: 10_000)
        var known: Set<String> = ["--help", "--version"]
        for match in help.matches(of: /--(\[no-\])?([a-z0-9][a-z0-9-]*)/) {
            known.insert("--" + match.output.2)
            if match.output.1 != nil { known.insert("--no-" + match.output.2) }
        }
        for argument in rest {
            if argument == "--" { break }  // what follows is positional
            guard argument.hasPrefix("--") else { continue }
            let option = String(argument.split(separator: "=", maxSplits: 1)[0])
            if !known.contains(option) {
                let closest = known.min { distance($0, option) < distance($1, option) }
                return (option, closest.flatMap { distance($0, option) <= 2 ? $0 : nil }, path.joined(separator: " "))
            }
        }
        return nil
    }

    /// Edit distance (insertions, deletions, substitutions).
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in 1...max(1, b.count) where !b.isEmpty {
                let current = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = current
            }
        }
        return row[b.count]
    }
}
