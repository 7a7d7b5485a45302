# scene_vlm_ros: two commands for a new user, `make demo` and `make test`.
# Both set everything up first (Debian packages, .venv, colcon build), idempotently.
SHELL := /bin/bash
RUN := scripts/with_env.sh
PYTEST_ARGS ?=
# ROS 2 distribution: kilted (default; the .venv of requirements.lock) or jazzy (`make test ROS_DISTRO=jazzy`:
# .venv-jazzy with requirements-jazzy.lock over .venv, see scripts/setup.d/11-ros-jazzy.sh). Only a
# command-line value counts: a sourced /opt/ros/<distro>/setup.bash exports ROS_DISTRO as well.
ifeq ($(origin ROS_DISTRO),command line)
ifeq ($(filter $(ROS_DISTRO),kilted jazzy),)
$(error ROS_DISTRO=$(ROS_DISTRO): use kilted or jazzy)
endif
export SCENE_VLM_ROS_DISTRO := $(ROS_DISTRO)
endif

.PHONY: help setup test demo soak bench lint clean

help:
	@echo "make demo   - set up, then map a scene, ask /scene_query questions, write out/demo/report.md"
	@echo "make test   - set up, then run the test suite (excluding slow tests)"
	@echo "make soak   - slow tests and long benchmarks"
	@echo "make bench  - all benchmarks, figures to out/bench/*.json"
	@echo "make lint   - ruff"
	@echo "             (any target with ROS_DISTRO=jazzy runs against ROS 2 Jazzy instead of Kilted)"

setup:
	@bash scripts/setup.sh

test: setup
	@$(RUN) python -m pytest -m "not slow" -q $(PYTEST_ARGS)

demo: setup
	@$(RUN) scene-vlm demo --out out/demo

soak: setup
	@$(RUN) python -m pytest -m slow -q $(PYTEST_ARGS)

bench: setup
	@$(RUN) scene-vlm bench all --out out/bench

lint: setup
	@$(RUN) ruff check .

clean:
	rm -rf ros2_ws/build ros2_ws/install ros2_ws/log .stamps out
