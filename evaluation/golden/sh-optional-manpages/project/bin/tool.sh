#!/usr/bin/env bash
echo "tool $*"
