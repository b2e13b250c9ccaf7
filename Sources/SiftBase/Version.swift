/// Sift's version: `sift --version`, ModelInfo's `server_version`, the clients' package versions.
public enum SiftVersion {
    public static let current = "0.8.0"
}
