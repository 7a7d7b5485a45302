# shellcheck shell=bash
# Java runtime for the caption metrics: pycocoevalcap's PTB tokenizer (Stanford CoreNLP jar) and
# METEOR (meteor-1.5.jar) run as `java` subprocesses. Installs Debian's default-jre-headless when
# no `java` is on PATH. A failed install only warns (no stamp is written, the next run retries):
# everything but the caption metrics works without Java, and those then raise CaptionScorerError
# and their tests skip. SCENE_VLM_SKIP_JAVA=1 skips the step.
java_stamp_value() { java -version 2>&1 | head -n 1; }

if [[ "${SCENE_VLM_SKIP_JAVA:-0}" == "1" ]]; then
  log "java: skipped (SCENE_VLM_SKIP_JAVA=1)"
elif command -v java >/dev/null 2>&1 && [[ "$(cat "$STAMPS/java" 2>/dev/null)" == "$(java_stamp_value)" ]]; then
  :
else
  if ! command -v java >/dev/null 2>&1; then
    log "java: installing default-jre-headless (caption metrics: PTB tokenizer, METEOR)"
    java_sudo=""
    [[ $(id -u) -ne 0 ]] && java_sudo="sudo"
    # Debian's JRE post-install script needs this man directory on slim images.
    $java_sudo mkdir -p /usr/share/man/man1
    if ! { $java_sudo apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive $java_sudo apt-get install -y -qq --no-install-recommends \
          default-jre-headless >/dev/null; }; then
      log "java: WARNING: could not install default-jre-headless; caption metrics will be unavailable"
    fi
  fi
  if command -v java >/dev/null 2>&1 && java -version >/dev/null 2>&1; then
    java_stamp_value > "$STAMPS/java"
    log "java: $(java_stamp_value)"
  fi
fi
