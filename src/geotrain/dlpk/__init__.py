"""The deep learning package (.dlpk): EMD, weights, pictures, report."""
