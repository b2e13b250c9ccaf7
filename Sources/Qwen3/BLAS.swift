import COpenBLAS
import CSiftKernels
import Foundation

/// OpenBLAS set-up. Debian 12's OpenBLAS 0.3.21 does not know recent Xeons (family 6,
/// model 207) and falls back to its "Prescott" kernels, 4-5x slower than its SkylakeX ones.
/// The core is chosen when the library loads, so the only fix from inside the process is to
/// re-execute it with `OPENBLAS_CORETYPE` set, which `ensureFastCore` does once.
public enum BLAS {
    /// Name of the kernel set OpenBLAS chose ("SkylakeX", "Haswell", "Prescott", ...).
    public static var coreName: String { String(cString: openblas_get_corename()) }

    /// Kernel sets that mean "this CPU was not recognised".
    static let genericCores: Set<String> = ["prescott", "core2", "nehalem", "katmai", "coppermine", "northwood", "banias", "atom", "unknown"]

    /// The best OpenBLAS kernel set this CPU can run, by CPUID.
    public static var bestCoreForCPU: String? {
        let f = sift_cpu_features()
        if f & UInt32(SIFT_CPU_AVX512) != 0 { return "SkylakeX" }
        if f & UInt32(SIFT_CPU_AVX2) != 0 { return "Haswell" }
        return nil
    }

    /// If OpenBLAS fell back to a generic core although the CPU can do better, re-executes the
    /// current process with `OPENBLAS_CORETYPE` set (once; the user's own setting always wins).
    /// Returns only when no re-exec is needed or possible.
    public static func ensureFastCore() {
        let env = ProcessInfo.processInfo.environment
        guard env["OPENBLAS_CORETYPE"] == nil, env["SIFT_BLAS_REEXEC"] == nil else { return }
        guard genericCores.contains(coreName.lowercased()), let best = bestCoreForCPU else { return }
        setenv("OPENBLAS_CORETYPE", best, 1)
        setenv("SIFT_BLAS_REEXEC", "1", 1)
        let args = CommandLine.arguments
        var cArgs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
        cArgs.append(nil)
        execv("/proc/self/exe", &cArgs)
        // execv returned: keep running on the slow kernels rather than fail.
        FileHandle.standardError.write(Data("warning: could not re-exec with OPENBLAS_CORETYPE=\(best); OpenBLAS runs its slow \(coreName) kernels\n".utf8))
    }

    public static var threads: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(newValue)) }
    }
}
