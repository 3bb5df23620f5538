"""Tests of the Home Assistant integration, with the virtual balancer as device."""
