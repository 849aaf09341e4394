#!/bin/bash
tree /home
