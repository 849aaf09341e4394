# Sourced by the install scripts: apt_wait ARGS... runs `apt-get ARGS...`, waiting for another
# apt/dpkg (unattended-upgrades, a provisioning script) to release its locks instead of failing.
apt_wait() {
  local tries=0
  until apt-get -o DPkg::Lock::Timeout=600 "$@"; do
    tries=$((tries + 1))
    # a held lists/ or archives/ lock (which DPkg::Lock::Timeout does not cover) or a
    # transient mirror error: wait and try again, up to ~10 minutes
    if [ $tries -ge 20 ]; then
      echo "apt-get $* failed $tries times" >&2
      return 1
    fi
    echo "apt-get busy or failing; retrying in 30 s ($tries/20)" >&2
    sleep 30
  done
}
