"""Tests for the Smart Active Balancer integration."""
