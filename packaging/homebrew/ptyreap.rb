# Homebrew formula for ptyreap: builds from source, then signs the binary with the debugger
# entitlement (platform/macos/ptyreap.entitlements) that reaping on macOS needs. Homebrew installs
# formulae only from taps (not from a file path), so put it into one, e.g. a local tap:
#   brew tap-new --no-git local/ptyreap
#   cp packaging/homebrew/ptyreap.rb "$(brew --repository local/ptyreap)/Formula/"
#   brew install --HEAD local/ptyreap/ptyreap     (the main branch; without --HEAD: the release below)
class Ptyreap < Formula
  desc "Find and release leaked pseudoterminal masters in running processes"
  homepage "https://github.com/ptyreap/ptyreap"
  # PLACEHOLDER until the first release: on each tag vX.Y.Z, set url to that tag's source tarball
  # and sha256 to its checksum (the release workflow, .github/workflows/release.yml, prints both
  # in its summary). The zeros below make a non-HEAD install fail the checksum, by design.
  url "https://github.com/ptyreap/ptyreap/archive/refs/tags/v0.1.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license any_of: ["MIT", "Apache-2.0"]
  head "https://github.com/ptyreap/ptyreap.git", branch: "main"

  depends_on "rust" => :build

  def install
    # --bin: the package also has test programs, which are never installed
    system "cargo", "install", "--bin", "ptyreap", *std_cargo_args

    if OS.mac?
      # ptyreap takes other processes' task ports (task_for_pid) and runs close() on a thread of
      # its own in them: macOS allows that only to a binary signed with
      # com.apple.security.cs.debugger. Ad hoc, with the hardened runtime, as
      # scripts/codesign-macos signs release builds.
      system "codesign", "--force", "--sign", "-", "--options", "runtime",
             "--entitlements", buildpath/"platform/macos/ptyreap.entitlements", bin/"ptyreap"
    end

    # one page per subcommand (ptyreap.1, ptyreap-watch.1, ...), from the built binary
    mkdir "man"
    system bin/"ptyreap", "man", "--dir", "man"
    man1.install Dir["man/*.1"]
    # `ptyreap completions bash|zsh|fish`
    generate_completions_from_executable(bin/"ptyreap", "completions", shells: [:bash, :zsh, :fish])
  end

  def post_install
    (var/"ptyreap").mkpath
  end

  # The watchdog as a root LaunchDaemon (sudo brew services start ptyreap), with the settings of
  # platform/macos/com.ptyreap.watch.plist.
  service do
    run [opt_bin/"ptyreap", "watch", "--warn", "100", "--reap", "200", "--min-idle", "10m",
         "--interval", "60s"]
    require_root true
    keep_alive successful_exit: false
    environment_variables PTYREAP_STATE_DIR: (var/"ptyreap").to_s
    log_path var/"log/ptyreap-watch.log"
    error_log_path var/"log/ptyreap-watch.log"
  end

  def caveats
    <<~EOS
      ptyreap sees and reaps other users' processes only as root:
        sudo #{opt_bin}/ptyreap
      When no terminal opens any more (PTYs exhausted), from anywhere without a PTY:
        osascript -e 'do shell script "#{opt_bin}/ptyreap rescue" with administrator privileges'
    EOS
  end

  test do
    assert_match(/^ptyreap \d+\.\d+\.\d+/, shell_output("#{bin}/ptyreap --version"))
    # the census, as a user: the system's PTY limit and how many are in use
    census = JSON.parse(shell_output("#{bin}/ptyreap --json"))
    limit_source = OS.mac? ? "kern.tty.ptmx_max" : "/proc/sys/kernel/pty/max"
    assert_equal limit_source, census["system"]["limit_source"]
    assert_operator census["system"]["limit"], :>=, 1
    if OS.mac?
      entitlements = shell_output("codesign -d --entitlements - --xml #{bin}/ptyreap 2>/dev/null")
      assert_match "com.apple.security.cs.debugger", entitlements
    end
    assert_path_exists man1/"ptyreap-watch.1"
  end
end
